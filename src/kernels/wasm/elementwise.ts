/** Elementwise and broadcast kernels through wasm: binary add/mul, sumTo, scale, GELU, SiLU, soft-capping. */

import { elementParts, type WasmOp, type WasmRuntime } from "./runtime.js";
import type { ParallelKernel } from "./threads.js";

/** Work per element (relative to one inner-loop step) of the elementwise kernels, for the split. */
const WORK = {
  geluForward: 16,
  geluBackward: 24,
  siluForward: 12,
  siluBackward: 16,
  scale: 1,
  softcapForward: 20,
  softcapBackward: 4,
} as const;

/** Drops size-1 dims and merges adjacent dims that both stride arrays walk contiguously. */
function collapse(shape: readonly number[], s1: readonly number[], s2: readonly number[]) {
  const sh: number[] = [];
  const a: number[] = [];
  const b: number[] = [];
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const n = sh.length - 1;
    if (n >= 0 && a[n] === s1[d]! * shape[d]! && b[n] === s2[d]! * shape[d]!) {
      sh[n]! *= shape[d]!;
      a[n] = s1[d]!;
      b[n] = s2[d]!;
    } else {
      sh.push(shape[d]!);
      a.push(s1[d]!);
      b.push(s2[d]!);
    }
  }
  if (sh.length === 0) return { shape: [1], s1: [0], s2: [0] };
  return { shape: sh, s1: a, s2: b };
}

/** Elements a strided walk over `shape` reaches: the highest offset + 1. */
const extent = (shape: number[], strides: number[]) =>
  shape.reduce((acc, s, d) => acc + (s - 1) * strides[d]!, 0) + 1;

// out: [n] = f(x: [n]), split into element ranges between threads
function unary(
  rt: WasmRuntime,
  kernel: ParallelKernel & keyof typeof WORK,
  out: Float32Array,
  x: Float32Array,
): void {
  const { heap: h, threads } = rt;
  h.reset();
  const px = h.put(x);
  const parts = elementParts(threads, x.length, WORK[kernel]);
  threads.run(
    h,
    kernel,
    parts.map(([i0, i1]) => [px + 4 * i0, px + 4 * i0, i1 - i0]),
  );
  h.get(out, px, x.length);
}

// dx: [n] = dout * f'(x)
function pointwiseGrad(
  rt: WasmRuntime,
  kernel: ParallelKernel & keyof typeof WORK,
  dx: Float32Array,
  dout: Float32Array,
  x: Float32Array,
): void {
  const { heap: h, threads } = rt;
  h.reset();
  const pg = h.put(dout, x.length);
  const px = h.put(x);
  const parts = elementParts(threads, x.length, WORK[kernel]);
  threads.run(
    h,
    kernel,
    parts.map(([i0, i1]) => [pg + 4 * i0, pg + 4 * i0, px + 4 * i0, i1 - i0]),
  );
  h.get(dx, pg, x.length);
}

// out[i] = a[i·aStrides] (+|*) b[i·bStrides]; the inner dim runs as SIMD when its strides are 0 or 1
export const binary: WasmOp<"binary"> = (rt, op, out, a, b, outShape, aStrides, bStrides) => {
  const total = outShape.reduce((x, y) => x * y, 1);
  if (total === 0) return;
  const c = collapse(outShape, aStrides, bStrides);
  const { heap: h } = rt;
  h.reset();
  const pa = h.put(a, extent(c.shape, c.s1));
  const pb = h.put(b, extent(c.shape, c.s2));
  const po = h.alloc(total * 4);
  const nd = c.shape.length - 1;
  const meta = h.alloc(16 * (nd + 1));
  const m = h.i32(meta, 4 * (nd + 1));
  for (let d = 0; d < nd; d++) {
    m[d] = c.shape[d]!;
    m[nd + 1 + d] = c.s1[d]!;
    m[2 * (nd + 1) + d] = c.s2[d]!;
  }
  const n = c.shape[nd]!;
  h.k.binary!(
    +(op === "mul"),
    po,
    pa,
    pb,
    nd,
    meta,
    meta + 4 * (nd + 1),
    meta + 8 * (nd + 1),
    meta + 12 * (nd + 1),
    n,
    c.s1[nd]!,
    c.s2[nd]!,
  );
  h.get(out, po, total);
};

// out (zeroed first): sum of g: [gShape] over the dims where outStrides is 0
export const sumTo: WasmOp<"sumTo"> = (rt, out, g, gShape, outStrides) => {
  const total = gShape.reduce((x, y) => x * y, 1);
  if (total === 0) {
    out.fill(0);
    return;
  }
  const contiguous: number[] = [];
  for (let d = gShape.length - 1, s = 1; d >= 0; d--) {
    contiguous[d] = s;
    s *= gShape[d]!;
  }
  const c = collapse(gShape, outStrides, contiguous);
  const { heap: h } = rt;
  h.reset();
  const pg = h.put(g, total);
  const po = h.alloc(out.length * 4);
  const nd = c.shape.length - 1;
  const meta = h.alloc(12 * (nd + 1));
  const m = h.i32(meta, 3 * (nd + 1));
  for (let d = 0; d < nd; d++) {
    m[d] = c.shape[d]!;
    m[nd + 1 + d] = c.s1[d]!;
  }
  h.k.sumTo!(po, out.length, pg, nd, meta, meta + 4 * (nd + 1), meta + 8 * (nd + 1), c.shape[nd]!, c.s1[nd]!);
  h.get(out, po);
};

// out = s * x
export const scale: WasmOp<"scale"> = (rt, out, x, s) => {
  const { heap: h, threads } = rt;
  h.reset();
  const px = h.put(x);
  const parts = elementParts(threads, x.length, WORK.scale);
  threads.run(
    h,
    "scale",
    parts.map(([i0, i1]) => [px + 4 * i0, px + 4 * i0, i1 - i0, s]),
  );
  h.get(out, px, x.length);
};

// x: [n] -> out: [n], GELU (tanh form)
export const geluForward: WasmOp<"geluForward"> = (rt, out, x) => {
  unary(rt, "geluForward", out, x);
};

// dx: [n] = dout * gelu'(x)
export const geluBackward: WasmOp<"geluBackward"> = (rt, dx, dout, x) => {
  pointwiseGrad(rt, "geluBackward", dx, dout, x);
};

// x: [n] -> out: [n] = x * sigmoid(x)
export const siluForward: WasmOp<"siluForward"> = (rt, out, x) => {
  unary(rt, "siluForward", out, x);
};

// dx: [n] = dout * silu'(x)
export const siluBackward: WasmOp<"siluBackward"> = (rt, dx, dout, x) => {
  pointwiseGrad(rt, "siluBackward", dx, dout, x);
};

// x: [n] -> out: [n] = cap · tanh(x / cap)
export const softcapForward: WasmOp<"softcapForward"> = (rt, out, x, cap) => {
  const { heap: h, threads } = rt;
  h.reset();
  const px = h.put(x);
  const parts = elementParts(threads, x.length, WORK.softcapForward);
  threads.run(
    h,
    "softcapForward",
    parts.map(([i0, i1]) => [px + 4 * i0, px + 4 * i0, i1 - i0, cap]),
  );
  h.get(out, px, x.length);
};

// dx: [n] = dout · (1 - (y / cap)²), y the forward output
export const softcapBackward: WasmOp<"softcapBackward"> = (rt, dx, dout, y, cap) => {
  const { heap: h, threads } = rt;
  h.reset();
  const pg = h.put(dout, y.length);
  const py = h.put(y);
  const parts = elementParts(threads, y.length, WORK.softcapBackward);
  threads.run(
    h,
    "softcapBackward",
    parts.map(([i0, i1]) => [pg + 4 * i0, pg + 4 * i0, py + 4 * i0, i1 - i0, cap]),
  );
  h.get(dx, pg, y.length);
};
