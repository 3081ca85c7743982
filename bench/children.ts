/**
 * Runs one configuration's child processes: ours (Node entry, LORA_* env) and the Python peers, plain
 * torch (/usr/bin/python3, bench/torch_bench.py) and transformers + PEFT (LORA_BENCH_PEFT_PYTHON,
 * bench/peft_bench.py).
 */
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ChildResult, StepSpec } from "./spec.js";

const here = dirname(fileURLToPath(import.meta.url));
/** dist/bench/train-step.js beside this file. */
const NODE_CHILD = join(here, "train-step.js");
/** The Python source is not compiled: bench/torch_bench.py in the repo, two levels up from dist/bench. */
export const TORCH_SCRIPT = join(here, "..", "..", "bench", "torch_bench.py");
/** Debian's python3-torch is visible only to the system interpreter. */
export const PYTHON = "/usr/bin/python3";

/** A Python peer: its interpreter, its script (torch_bench.py's --probe / --spec interface) and name. */
export interface Peer {
  name: string;
  python: string;
  script: string;
}
export const TORCH_PEER: Peer = { name: "torch", python: PYTHON, script: TORCH_SCRIPT };
/** transformers + PEFT, where LORA_BENCH_PEFT_PYTHON names a python that has them (null: not asked for). */
export const PEFT_PEER: Peer | null = process.env.LORA_BENCH_PEFT_PYTHON
  ? {
      name: "peft",
      python: process.env.LORA_BENCH_PEFT_PYTHON,
      script: join(here, "..", "..", "bench", "peft_bench.py"),
    }
  : null;

/** Node 20-21 need this V8 flag for relaxed SIMD (it is process-wide, so it goes on the child). */
export const NODE_FLAGS =
  Number(process.versions.node.split(".")[0]) < 22 ? ["--experimental-wasm-relaxed-simd"] : [];

const MAX_BUFFER = 64 << 20;
/** A configuration that runs longer than this is killed and reported, so one stuck child (a worker pool
 *  that never wakes) cannot stall the whole run. */
const CHILD_TIMEOUT_MS = 15 * 60_000;

function parseChild(what: string, r: ReturnType<typeof spawnSync>): ChildResult {
  if (r.error) throw new Error(`${what}: ${r.error.message}`);
  if (r.signal === "SIGTERM") throw new Error(`${what}: killed after ${CHILD_TIMEOUT_MS / 60_000} minutes`);
  if (r.status !== 0) {
    const err = String(r.stderr ?? "")
      .trim()
      .split("\n")
      .slice(-5)
      .join("\n");
    throw new Error(`${what} exited with ${r.status ?? r.signal}${err ? `:\n${err}` : ""}`);
  }
  const last = String(r.stdout).trim().split("\n").pop() ?? "";
  return JSON.parse(last) as ChildResult;
}

export function runOurs(spec: StepSpec, threads: number, backendName: string | undefined): ChildResult {
  const env: NodeJS.ProcessEnv = { ...process.env, LORA_THREADS: String(threads) };
  if (backendName) env.LORA_BACKEND = backendName;
  else delete env.LORA_BACKEND;
  const r = spawnSync(process.execPath, [...NODE_FLAGS, NODE_CHILD, JSON.stringify(spec)], {
    env,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    maxBuffer: MAX_BUFFER,
    timeout: CHILD_TIMEOUT_MS,
  });
  return parseChild(`ours (${spec.model}, ${threads} thread${threads > 1 ? "s" : ""})`, r);
}

export interface TorchProbe {
  version: string | null;
  reason?: string;
  blas?: string[];
  /** Set when torch runs on a slow BLAS, which would make the comparison meaningless. */
  warning?: string;
}

/** Debian's reference (netlib) BLAS: python3-torch falls back to it when no OpenBLAS is installed. */
const REFERENCE_BLAS = /\/blas\/libblas\.so/;

/** A peer's versions and BLAS, or a null version (with the reason) when its python cannot import them. */
export function probeTorch(peer: Peer = TORCH_PEER): TorchProbe {
  const r = spawnSync(peer.python, [peer.script, "--probe"], { encoding: "utf8", timeout: 120_000 });
  if (r.error || r.status !== 0) {
    const why = r.error?.message ?? String(r.stderr).trim().split("\n").pop();
    return {
      version: null,
      reason: `${peer.python} with ${peer.name === "torch" ? "torch" : "torch, transformers and peft"} not usable (${why})`,
    };
  }
  const { torch, blas } = JSON.parse(r.stdout) as { torch: string; blas: string[] };
  const slow = blas.find((b) => REFERENCE_BLAS.test(b));
  return {
    version: torch,
    blas,
    ...(slow
      ? {
          warning: `torch uses the reference BLAS ${slow} (about 5 GFLOP/s): install libopenblas0-pthread for a fair comparison`,
        }
      : {}),
  };
}

/**
 * With our kernels forced to a lower level (LORA_ISA=avx2 or avx512 on a newer CPU), the Python peers
 * are held to the same vector width, so the run compares what a CPU of that level gives both sides:
 * OpenBLAS's Haswell (or SkylakeX) kernels, MKL's AVX2 (or AVX-512) code path, ATen's avx2 (or avx512)
 * kernels. A variable already set in the environment is left as it is.
 */
const PEER_ISA_ENV: Record<string, Record<string, string>> = {
  avx2: { OPENBLAS_CORETYPE: "Haswell", MKL_ENABLE_INSTRUCTIONS: "AVX2", ATEN_CPU_CAPABILITY: "avx2" },
  avx512: { OPENBLAS_CORETYPE: "SkylakeX", MKL_ENABLE_INSTRUCTIONS: "AVX512", ATEN_CPU_CAPABILITY: "avx512" },
};

export function peerIsaEnv(isa = process.env.LORA_ISA ?? ""): Record<string, string> {
  return Object.fromEntries(
    Object.entries(PEER_ISA_ENV[isa] ?? {}).filter(([k]) => process.env[k] === undefined),
  );
}

export function runTorch(
  spec: StepSpec,
  weightsDir: string,
  threads: number,
  peer = TORCH_PEER,
): ChildResult {
  const n = String(threads);
  const env = {
    ...process.env,
    OMP_NUM_THREADS: n,
    OPENBLAS_NUM_THREADS: n,
    MKL_NUM_THREADS: n,
    OMP_WAIT_POLICY: "PASSIVE",
    ...peerIsaEnv(),
  };
  const r = spawnSync(
    peer.python,
    [peer.script, "--spec", JSON.stringify(spec), "--weights", weightsDir, "--threads", n],
    {
      env,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      maxBuffer: MAX_BUFFER,
      timeout: CHILD_TIMEOUT_MS,
    },
  );
  return parseChild(`${peer.name} (${spec.model}, ${threads} thread${threads > 1 ? "s" : ""})`, r);
}
