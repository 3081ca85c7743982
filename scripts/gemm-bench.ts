/**
 * GEMM throughput of the wasm backend: GFLOP/s = 2MNK / time, "best (median)" of the timed runs after
 * warm-up, at 1 and 2 threads, relaxed SIMD and plain mul+add, layouts NN / NT / TN. Also the share of
 * a call spent copying operands in and the result out. Not a test: run `npm run bench:gemm`.
 */
import { singleMatmul } from "../src/kernels/backend.js";
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
