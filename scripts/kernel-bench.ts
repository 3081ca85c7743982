/**
 * Non-GEMM kernels, wasm (single-thread core and the 2-thread pool) and native (1 and 2 threads, at the
 * ISA level LORA_ISA forces or the CPU's best) against ref, at GPT-2-small shapes with seq 256:
 * milliseconds per call (best of the timed runs). Not a test: `npm run bench:kernels`.
 */
import { cpus } from "node:os";
import type { Backend } from "../src/kernels/backend.js";
import { setBackend } from "../src/kernels/index.js";
import { nativeIsa, setThreads } from "../src/kernels/node/index.js";
import { refBackend } from "../src/kernels/ref/index.js";
import { wasmBackend } from "../src/kernels/wasm/index.js";
import { createThreadedWasm } from "../src/kernels/wasm/node/pool.js";

const N = 256;
const C = 768;
const V = 50257;
const att = { B: 1, Tq: N, Tk: N, Hq: 12, Hkv: 12, D: 64, causal: true };
const r = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
const x = r(N * 4 * C);
const w = r(C);
const logits = r(N * V);
const targets = Int32Array.from({ length: N }, (_, i) => (i * 97) % V);
const q = r(N * C);
const k = r(N * C);
const v = r(N * C);
const p = r(1 << 20);
const out = new Float32Array(N * V);
const out2 = new Float32Array(N * V);
const s1 = new Float32Array(N * 12 * N);
const s2 = new Float32Array(N);
const s3 = new Float32Array(N);

const cases: [string, (b: Backend) => void][] = [
  ["gelu fwd [256, 3072]", (b) => b.geluForward(out, x)],
  ["gelu bwd [256, 3072]", (b) => b.geluBackward(out, x, x)],
  ["layerNorm fwd [256, 768]", (b) => b.layerNormForward(out, s2, s3, q, w, w, N, C, 1e-5)],
  ["layerNorm bwd [256, 768]", (b) => b.layerNormBackward(out, out2, s1, q, q, w, s2, s3, N, C)],
  ["silu fwd [256, 3072]", (b) => b.siluForward(out, x)],
  ["silu bwd [256, 3072]", (b) => b.siluBackward(out, x, x)],
  ["rmsNorm fwd [256, 768]", (b) => b.rmsNormForward(out, s2, q, w, N, C, 1e-5)],
  ["rmsNorm bwd [256, 768]", (b) => b.rmsNormBackward(out, out2, q, q, w, s2, N, C)],
  ["softmax fwd [256, 3072]", (b) => b.softmaxForward(out, x, N, 4 * C)],
  ["attention fwd 12x256x256x64", (b) => b.attentionForward(out, s1, q, k, v, att)],
  ["attention bwd 12x256x256x64", (b) => b.attentionBackward(out, out2, s1, q, q, k, v, s1, att)],
  ["cross-entropy fwd [256, 50257]", (b) => b.crossEntropyForward(s2, s3, logits, targets, N, V)],
  ["cross-entropy bwd [256, 50257]", (b) => b.crossEntropyBackward(out, logits, s3, targets, N, V, 1 / N)],
  [
    "adamw 1M",
    (b) =>
      b.adamw(p.slice(), p, out.subarray(0, p.length), out2.subarray(0, p.length), {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weightDecay: 0,
        step: 1,
      }),
  ],
];

function best(fn: () => void): number {
  fn();
  let t = Infinity;
  for (let i = 0; i < 7; i++) {
    const t0 = performance.now();
    fn();
    t = Math.min(t, performance.now() - t0);
  }
  return t;
}

const pool = createThreadedWasm({ threads: 2, name: "bench" }).backend;
const isa = nativeIsa();
const native = isa ? setBackend("native") : null; // the ISA is null exactly when the addon is absent
// native at 1 thread, then at 2: the thread count is the addon's, so it is set around each timing
const nativeAt = (threads: number, fn: (b: Backend) => void) => {
  if (!native) return "";
  setThreads(threads);
  return best(() => fn(native)).toFixed(2);
};
console.log(`${cpus()[0]?.model ?? "unknown CPU"}; native ISA ${isa ?? "(addon absent)"}\n`);
console.log(
  "| kernel | ref ms | wasm 1T ms | wasm 2T ms | native 1T ms | native 2T ms |\n|---|---|---|---|---|---|",
);
for (const [name, fn] of cases) {
  const [a, b, c] = [refBackend, wasmBackend, pool].map((be) => best(() => fn(be)).toFixed(2));
  console.log(`| ${name} | ${a} | ${b} | ${c} | ${nativeAt(1, fn)} | ${nativeAt(2, fn)} |`);
}
