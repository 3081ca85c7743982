/** Backend selection: native, then wasm where SIMD validates, then ref; LORA_BACKEND overrides; the pool lets the process exit. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { it } from "node:test";
import { availableBackends, backend } from "../../src/kernels/index.js";
import { nativeAddon } from "../../src/kernels/native/node/addon.js";
import { wasmAvailable } from "../../src/kernels/wasm/index.js";
import { loraWith, repoRoot } from "../helpers.js";

it("backend() is LORA_BACKEND when set, else wasm where SIMD validates, else ref", () => {
  const want = process.env.LORA_BACKEND || (wasmAvailable() ? "wasm" : "ref");
  assert.equal(backend().name, want);
  assert.ok(availableBackends().includes("ref"));
});

it("a process that used the worker pool exits on its own (workers are unref'd)", () => {
  const pool = join(repoRoot, "dist/src/kernels/wasm/node/pool.js");
  const script = `
    const { setThreads, threadedWasmBackend: k } = await import(${JSON.stringify(pool)});
    setThreads(2);
    const n = 256, a = new Float32Array(n * n).fill(1), out = new Float32Array(n * n);
    k.matmul(out, a, a, { batch: 1, M: n, N: n, K: n, transA: false, transB: false,
      strideA: 0, strideB: 0, strideOut: 0, accumulate: false });
    console.log(out[0]);`;
  const stdout = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    timeout: 20_000,
    env: { ...process.env, LORA_BACKEND: "" },
  });
  assert.equal(stdout.trim(), "256");
});

it("the Node entry prefers native when its addon loads; without it, wasm, and lora --version says why", () => {
  const run = (env: Record<string, string>) => loraWith({ LORA_BACKEND: "", ...env }, "--version").out;
  const plain = run({});
  if (nativeAddon()) assert.match(plain, /backend native (avx512|avx2|neon|generic)/);
  else assert.match(plain, /backend wasm.*native unavailable: /);
  const off = run({ LORA_NATIVE: "0" });
  assert.match(off, /backend wasm, \d+ thread\(s\); native unavailable: disabled by LORA_NATIVE=0/);
  const doctor = loraWith({ LORA_NATIVE: "0" }, "doctor").out;
  assert.match(doctor, /native: {4}not available: disabled by LORA_NATIVE=0/);
  assert.match(doctor, /available: ref, wasm/);
});
