/**
 * GEMM throughput: GFLOP/s = 2MNK / time.
 *
 * 1. The native backend on every GEMM shape of the benchmark's two training steps (`npm run bench`'s
 *    GEMM table: GPT-2 small at 1 x 256 tokens, the small Llama at 8 x 256), at 1 and 2 threads, beside
 *    PyTorch's matmul on the same shape and thread count (OpenBLAS sgemm with Debian's python3-torch;
 *    torch.set_num_threads and OPENBLAS_NUM_THREADS = n) when /usr/bin/python3 has torch. The two are
 *    timed in one run, interleaved (ours, torch, ours, ...), best of BENCH_ROUNDS rounds of >= 30 ms each,
 *    so both see the same load on a shared machine. Records the CPU model and the ISA level.
 * 2. The wasm backend: "best (median)" of the timed runs after warm-up, relaxed SIMD and plain mul+add,
 *    layouts NN / NT / TN, and the share of a call spent copying operands in and the result out.
 * Not a test: run `npm run bench:gemm` (BENCH_PARTS=native or wasm for one part).
 */
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { createInterface } from "node:readline";
import { PYTHON, peerIsaEnv, probeTorch } from "../bench/children.js";
import { type MatmulDims, singleMatmul } from "../src/kernels/backend.js";
import { nativeAddon, nativeStatus } from "../src/kernels/native/node/addon.js";
import { createNativeBackend } from "../src/kernels/native/node/backend.js";
import { relaxedSupported } from "../src/kernels/wasm/index.js";
import { createThreadedWasm } from "../src/kernels/wasm/node/pool.js";

const SHAPES: [number, number, number][] = [
  [512, 768, 768],
  [512, 768, 3072],
  [512, 3072, 768],
  [512, 768, 8],
  [512, 8, 768],
];
const LAYOUTS = { NN: [false, false], NT: [false, true], TN: [true, false] } as const;
const budgetMs = Number(process.env.BENCH_MS ?? 400);
// optional filters, e.g. BENCH_THREADS=1 BENCH_LAYOUTS=NN BENCH_BUILDS=relaxed BENCH_SHAPES=0,3
const pick = (name: string) => process.env[name]?.split(",");
const threadList = (pick("BENCH_THREADS") ?? ["1", "2"]).map(Number);
const layoutList = pick("BENCH_LAYOUTS") ?? Object.keys(LAYOUTS);
const buildList = pick("BENCH_BUILDS") ?? ["relaxed", "plain"];
const shapeList = (pick("BENCH_SHAPES") ?? SHAPES.map((_, i) => String(i))).map((i) => SHAPES[Number(i)]!);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** [best, median] milliseconds per call: the machine may be shared, so the best run is the cleaner figure. */
function time(fn: () => void): [number, number] {
  fn();
  fn();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < 5 || (performance.now() - start < budgetMs && times.length < 50)) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  return [Math.min(...times), median(times)];
}

const parts = pick("BENCH_PARTS") ?? ["native", "wasm"];

// ---- 1. native against PyTorch/OpenBLAS on the training steps' shapes -----------------------------------

interface StepShape {
  model: string;
  batch: number;
  M: number;
  K: number;
  N: number;
  transA: boolean;
  transB: boolean;
  accumulate: boolean;
}
const S = (model: string, batch: number, M: number, K: number, N: number, op: string): StepShape => ({
  model,
  batch,
  M,
  K,
  N,
  transA: op[0] === "T",
  transB: op[1] === "T",
  accumulate: op.endsWith("+"),
});
/** The GEMM table of `npm run bench` (LoRA r = 8 on q, v): model a (GPT-2 small, 1 x 256), b (Llama, 8 x 256). */
const STEP_SHAPES: StepShape[] = [
  S("a", 1, 256, 768, 3072, "NT"),
  S("a", 1, 256, 3072, 768, "NT"),
  S("a", 1, 256, 768, 3072, "NN"),
  S("a", 1, 256, 3072, 768, "NN"),
  S("a", 1, 256, 768, 2304, "NT"),
  S("a", 1, 256, 2304, 768, "NN"),
  S("a", 1, 128, 768, 50257, "NT"),
  S("a", 1, 128, 50257, 768, "NN"),
  S("a", 1, 256, 768, 768, "NT"),
  S("a", 1, 256, 768, 768, "NN"),
  S("a", 1, 256, 8, 2304, "NT"),
  S("a", 1, 256, 2304, 8, "NN"),
  S("a", 1, 2304, 256, 8, "TN+"),
  S("a", 1, 256, 768, 8, "NT"),
  S("a", 1, 8, 256, 768, "TN+"),
  S("a", 1, 256, 8, 768, "NN"),
  S("b", 1, 1020, 256, 8192, "NT"),
  S("b", 1, 1020, 8192, 256, "NN"),
  S("b", 1, 2048, 256, 688, "NT"),
  S("b", 8, 256, 688, 256, "NN"),
  S("b", 1, 2048, 256, 256, "NT"),
  S("b", 8, 256, 256, 256, "NN"),
  S("b", 1, 2048, 688, 256, "NT"),
  S("b", 8, 256, 256, 688, "NN"),
  S("b", 1, 2048, 256, 8, "NT"),
  S("b", 1, 2048, 8, 256, "NT"),
  S("b", 8, 256, 256, 8, "NN"),
  S("b", 1, 256, 2048, 8, "TN+"),
  S("b", 1, 8, 2048, 256, "TN+"),
  S("b", 8, 256, 8, 256, "NN"),
];
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const label = (s: StepShape) =>
  `${s.batch > 1 ? `${s.batch}x ` : ""}${s.M}x${s.K} @ ${s.K}x${s.N} ${s.transA ? "T" : "N"}${s.transB ? "T" : "N"}${s.accumulate ? "+" : ""}`;

/** Blocks this thread for ms (lets torch's OpenBLAS workers stop spinning before ours is timed). */
const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** A /usr/bin/python3 child timing torch.matmul (scripts/torch_gemm.py), one shape per request. */
async function startTorch(threads: number) {
  const n = String(threads);
  const script = new URL("../../scripts/torch_gemm.py", import.meta.url).pathname;
  const child = spawn(PYTHON, [script, n], {
    env: {
      ...process.env,
      OMP_NUM_THREADS: n,
      OPENBLAS_NUM_THREADS: n,
      MKL_NUM_THREADS: n,
      OMP_WAIT_POLICY: "PASSIVE",
      ...peerIsaEnv(), // LORA_ISA=avx2 holds OpenBLAS to its Haswell kernels too
    },
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const r = await lines.next();
    if (r.done) throw new Error("torch_gemm.py ended early");
    return JSON.parse(r.value) as Record<string, unknown>;
  };
  await next(); // its greeting: torch imported, threads set
  return {
    /** best seconds per call of one round */
    async time(s: StepShape): Promise<number> {
      child.stdin.write(`${JSON.stringify({ ...s, rounds: 1 })}\n`);
      return (await next()).s as number;
    },
    close: () => child.stdin.end(),
  };
}

/** Seconds per call: the best over one round of calls lasting >= 30 ms. */
function round(fn: () => void): number {
  fn();
  let calls = 0;
  const t0 = performance.now();
  let t = 0;
  do {
    fn();
    calls++;
    t = performance.now() - t0;
  } while (t < 30);
  return t / 1000 / calls;
}

async function nativeVsTorch(): Promise<void> {
  const addon = nativeAddon();
  if (!addon) {
    console.log(`native part skipped: the addon is unavailable (${nativeStatus()})\n`);
    return;
  }
  const native = createNativeBackend(addon);
  const info = addon.info();
  const torch = probeTorch();
  const cpu = cpus()[0]?.model ?? "unknown";
  console.log(
    `CPU: ${cpu} (${cpus().length} cores); native ISA ${info.isa}${info.forced ? ` (forced by LORA_ISA; CPU best ${info.cpu})` : " (the CPU's best)"}`,
  );
  if (!torch.version) console.log(`PyTorch column skipped: ${torch.reason}`);
  else console.log(`PyTorch ${torch.version}, BLAS: ${(torch.blas ?? []).join(", ") || "unknown"}`);
  if (torch.warning) console.log(`WARNING: ${torch.warning}`);
  console.log(
    `interleaved, best of ${rounds} rounds (>= 30 ms each) per side; GFLOP/s = 2 * batch * M * N * K / time\n`,
  );
  console.log(
    "| model | shape (M x K @ K x N, op) | threads | ours GFLOP/s | PyTorch (OpenBLAS) GFLOP/s | ours / PyTorch |",
  );
  console.log("|---|---|---|---|---|---|");
  const results: Record<string, unknown>[] = [];
  for (const threads of threadList) {
    addon.setThreads(threads);
    const t = torch.version ? await startTorch(threads) : null;
    for (const s of STEP_SHAPES) {
      const { batch, M, K, N, transA, transB, accumulate } = s;
      const d: MatmulDims = {
        batch,
        M,
        N,
        K,
        transA,
        transB,
        accumulate,
        strideA: M * K,
        strideB: 0,
        strideOut: M * N,
      };
      const a = Float32Array.from({ length: batch * M * K }, (_, i) => Math.sin(i * 0.37) * 0.5);
      const b = Float32Array.from({ length: K * N }, (_, i) => Math.cos(i * 0.11) * 0.5);
      const out = new Float32Array(batch * M * N);
      let ours = Infinity;
      let theirs = Infinity;
      for (let r = 0; r < rounds; r++) {
        if (t) pause(150);
        ours = Math.min(
          ours,
          round(() => native.matmul(out, a, b, d)),
        );
        if (t) theirs = Math.min(theirs, await t.time(s));
      }
      const gf = (sec: number) => (2 * batch * M * N * K) / sec / 1e9;
      const ratio = t ? (theirs / ours).toFixed(2) : "-";
      console.log(
        `| ${s.model} | ${label(s)} | ${threads} | ${gf(ours).toFixed(1)} | ${t ? gf(theirs).toFixed(1) : "-"} | ${ratio} |`,
      );
      results.push({ ...s, threads, ours: gf(ours), torch: t ? gf(theirs) : null });
    }
    t?.close();
  }
  const file = new URL("../../bench/results/gemm-latest.json", import.meta.url);
  mkdirSync(new URL(".", file), { recursive: true });
  const meta = {
    date: new Date().toISOString(),
    cpu,
    cores: cpus().length,
    isa: info,
    torch: torch.version,
    torchBlas: torch.blas ?? null,
  };
  writeFileSync(file, `${JSON.stringify({ meta, rounds, results }, null, 2)}\n`);
  console.log(`\nwrote ${file.pathname}\n`);
}

if (parts.includes("native")) await nativeVsTorch();

// ---- 2. the wasm backend -----------------------------------------------------------------------------------

if (parts.includes("wasm")) wasmBench();

function wasmBench(): void {
  const rows: string[] = [];
  const builds = buildList.filter((b) => b === "plain" || relaxedSupported()).map((b) => b === "relaxed");
  for (const relaxed of builds) {
    const w = createThreadedWasm({ relaxed, threads: 2, name: `bench-${relaxed}` });
    for (const threads of threadList) {
      w.pool().count = threads;
      for (const layout of layoutList) {
        const [transA, transB] = LAYOUTS[layout as keyof typeof LAYOUTS];
        const cells: string[] = [];
        for (const [M, K, N] of shapeList) {
          const a = Float32Array.from({ length: M * K }, () => Math.random() - 0.5);
          const b = Float32Array.from({ length: K * N }, () => Math.random() - 0.5);
          const out = new Float32Array(M * N);
          const d = singleMatmul(M, N, K, { transA, transB });
          const [best, mid] = time(() => w.backend.matmul(out, a, b, d));
          const gflops = (ms: number) => ((2 * M * N * K) / ms / 1e6).toFixed(1);
          cells.push(`${gflops(best)} (${gflops(mid)})`);
        }
        rows.push(
          `| ${relaxed ? "relaxed_madd" : "mul+add"} | ${threads} | ${layout} | ${cells.join(" | ")} |`,
        );
      }
    }
  }
  console.log(`| build | threads | layout | ${shapeList.map((s) => s.join("x")).join(" | ")} |`);
  console.log(`|---|---|---|${shapeList.map(() => "---").join("|")}|`);
  for (const r of rows) console.log(r);

  // copy share: the time to copy the operands in and the result out, against a whole 512x768x768 call
  if (!process.env.BENCH_NO_COPY) {
    const [M, K, N] = SHAPES[0]!;
    const a = new Float32Array(M * K).fill(0.5);
    const b = new Float32Array(K * N).fill(0.5);
    const out = new Float32Array(M * N);
    const copy = () => {
      const c = new Float32Array(M * K + K * N + M * N);
      c.set(a);
      c.set(b, M * K);
      out.set(c.subarray(0, M * N));
    };
    const w = createThreadedWasm({ threads: 1, name: "bench-copy" });
    const d = singleMatmul(M, N, K);
    const [total] = time(() => w.backend.matmul(out, a, b, d));
    const [copies] = time(copy);
    console.log(
      `\n512x768x768 NN, 1 thread: ${total.toFixed(2)} ms per call; copying in+out ≈ ${copies.toFixed(2)} ms (${((100 * copies) / total).toFixed(1)}%)`,
    );
  }
}
