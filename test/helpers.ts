/** Shared test helpers: repo paths, the shared data folder, and dtype-based tolerances. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type Backend, backend, setBackend } from "../src/kernels/index.js";
import { applyLoRA } from "../src/lora/index.js";
import { buildModel, type CausalLM, randomParams } from "../src/models/index.js";
import { Rng } from "../src/tensor/random.js";
import { Tensor } from "../src/tensor/tensor.js";

/** The repository root (tests run from dist/test/..., two levels below it). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const fixturesDir = resolve(repoRoot, "test/fixtures");

/** The built `lora` command line. */
export const CLI = resolve(repoRoot, "dist/src/cli/main.js");

/** Runs `lora ...args` as a user does (env added to this process's); exit code, stdout, stderr. */
export function lora(...args: string[]): { code: number | null; out: string; err: string } {
  return loraWith({}, ...args);
}

export function loraWith(env: Record<string, string>, ...args: string[]) {
  return loraIn({ env }, ...args);
}

/** `lora ...args` run from another directory (`cwd`) and/or with extra environment variables. */
export function loraIn(opts: { cwd?: string; env?: Record<string, string> }, ...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: "utf8",
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A fixture model folder under test/fixtures/models. */
export const fixtureModel = (name: string) => resolve(fixturesDir, "models", name);

/** Writes rows as a JSONL file, one object per line. */
/**
 * `n` tokenized rows for the tiny fixture models (vocab 60), row i starting at offset `from`: the ids
 * (5·i + 3·t) mod 60, `length(i)` tokens long (12 unless given).
 */
export function tokenRows(n: number, from = 0, length: (i: number) => number = () => 12) {
  return Array.from({ length: n }, (_, k) => {
    const i = from + k;
    return { input_ids: Array.from({ length: length(i) }, (_, t) => (5 * i + 3 * t) % 60) };
  });
}

export const writeJsonl = (path: string, rows: unknown[]) =>
  writeFileSync(path, rows.map((r) => `${JSON.stringify(r)}\n`).join(""));

/** Asserts a `lora` run exited 0, showing its stderr when not. */
export const assertOk = (r: { code: number | null; err: string }) => assert.equal(r.code, 0, r.err);

/** `../shared/data` beside the checkout, or null when absent (tests then skip, saying so). */
export function sharedData(sub = ""): string | null {
  const dir = resolve(repoRoot, "../shared/data", sub);
  return existsSync(dir) ? dir : null;
}
export const SHARED_MISSING = "skipped: ../shared/data is absent on this machine";

/** Tolerances are set by dtype, never loosened per test. */
export const TOL = {
  f32: { rtol: 1e-4, atol: 1e-5 },
  f16: { rtol: 2e-3, atol: 2e-3 },
  bf16: { rtol: 1.6e-2, atol: 1.6e-2 },
} as const;
export type TolKey = keyof typeof TOL;

/** Asserts |got - want| <= atol + rtol * |want| elementwise, and reports the worst element. */
export function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  dtype: TolKey = "f32",
  label = "",
): void {
  const { rtol, atol } = TOL[dtype];
  assert.equal(got.length, want.length, `${label}: length ${got.length} != ${want.length}`);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < got.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    const excess = Math.abs(g - w) - (atol + rtol * Math.abs(w));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    assert.fail(
      `${label}: element ${worst} got ${got[worst]} want ${want[worst]} (rtol ${rtol}, atol ${atol}, ${dtype})`,
    );
  }
}

/** Wraps the active backend, counting calls per kernel; `spy` sees every call's arguments. */
export function counting(spy?: (kernel: string, args: unknown[]) => void): {
  calls: Map<string, number>;
  restore: () => void;
} {
  const inner = backend();
  const calls = new Map<string, number>();
  const wrapped = Object.fromEntries(
    Object.entries(inner).map(([k, v]) => [
      k,
      typeof v === "function"
        ? (...args: unknown[]) => {
            calls.set(k, (calls.get(k) ?? 0) + 1);
            spy?.(k, args);
            return (v as (...a: unknown[]) => unknown).apply(inner, args);
          }
        : v,
    ]),
  ) as unknown as Backend;
  setBackend(wrapped);
  return { calls, restore: () => setBackend(inner) };
}

/** A random model with LoRA on `targets`; B gets values too, so every LoRA gradient is nonzero. */
export function loraModel(config: Record<string, unknown>, targets: string[], layers?: number[]): CausalLM {
  const model = buildModel(config, randomParams(1, 0.2));
  applyLoRA(
    model,
    {
      r: 4,
      lora_alpha: 8,
      lora_dropout: 0,
      target_modules: targets,
      use_rslora: false,
      init_lora_weights: "gaussian",
      layers_to_transform: layers ?? null,
    },
    { rng: new Rng(2) },
  );
  const rng = new Rng(3);
  for (const [name, t] of model.trainableParameters()) {
    if (name.endsWith("lora_B")) t.data.set(Tensor.randn(t.shape, rng, 0.1).data);
  }
  return model;
}
