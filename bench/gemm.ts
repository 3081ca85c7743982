/**
 * The GEMM table: record the matmul shapes of one training step through a recording proxy set as
 * the active backend, then time each distinct shape on the real backend.
 */
import { type Backend, backend, isHalf, type MatmulDims, setBackend, type WeightArray } from "../src/node.js";
import type { GemmShape } from "./spec.js";

type Recorded = Omit<GemmShape, "ms" | "gflops"> & { dims: MatmulDims };

const keyOf = (d: MatmulDims, bDtype: string) =>
  [d.batch, d.M, d.N, d.K, d.transA, d.transB, d.accumulate, d.strideA === 0, d.strideB === 0, bDtype].join(
    ",",
  );

/** Runs fn with a backend whose matmul counts calls per shape; returns the shapes, most FLOPs first. */
export function recordMatmuls(fn: () => void): Recorded[] {
  const base = backend();
  const seen = new Map<string, Recorded>();
  const matmul = (out: Float32Array, a: Float32Array, b: WeightArray, d: MatmulDims) => {
    const bDtype = isHalf(b) ? b.dtype : "f32";
    const key = keyOf(d, bDtype);
    const hit = seen.get(key);
    if (hit) hit.callsPerStep++;
    else {
      const { batch, M, N, K, transA, transB, accumulate } = d;
      seen.set(key, { batch, M, N, K, transA, transB, accumulate, bDtype, callsPerStep: 1, dims: { ...d } });
    }
    base.matmul(out, a, b, d);
  };
  // Every other member is the real backend's, bound to it (so private state keeps working).
  const proxy = new Proxy(base, {
    get(target, prop) {
      if (prop === "matmul") return matmul;
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  }) as Backend;
  setBackend(proxy);
  try {
    fn();
  } finally {
    setBackend(base);
  }
  const flops = (s: Recorded) => s.callsPerStep * s.batch * s.M * s.N * s.K;
  return [...seen.values()].sort((x, y) => flops(y) - flops(x));
}

/** Buffer length an operand needs: (batch - 1) strides plus one item. */
const span = (stride: number, batch: number, item: number) => stride * (batch - 1) + item;

/** Median time per call of one shape, calling it until minMs has passed (at least once; one warm-up call when cheap). */
export function timeMatmul(d: MatmulDims, minMs: number, bDtype: GemmShape["bDtype"] = "f32"): number {
  const k = backend();
  const a = new Float32Array(span(d.strideA, d.batch, d.M * d.K)).fill(0.01);
  const nb = span(d.strideB, d.batch, d.K * d.N);
  // 0x3c23 is about 0.01 in bf16 and 1 in f16: the value does not matter, the operand's dtype does
  const b: WeightArray =
    bDtype === "f32"
      ? new Float32Array(nb).fill(0.01)
      : { dtype: bDtype, bits: new Uint16Array(nb).fill(0x3c23) };
  const out = new Float32Array(span(d.strideOut, d.batch, d.M * d.N));
  const once = () => {
    const t0 = performance.now();
    k.matmul(out, a, b, d);
    return performance.now() - t0;
  };
  const first = once();
  const times = first < 1000 ? [] : [first];
  const start = performance.now();
  while (times.length === 0 || performance.now() - start < minMs) times.push(once());
  return median(times);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function gemmTable(shapes: Recorded[], minMs: number): GemmShape[] {
  return shapes.map(({ dims, ...s }) => {
    const ms = timeMatmul(dims, minMs, s.bDtype);
    return { ...s, ms, gflops: (2 * s.batch * s.M * s.N * s.K) / (ms * 1e6) };
  });
}
