/** Reference elementwise, broadcast, slice and embedding kernels. */
import { isHalf, type WeightArray } from "../backend.js";
import { decodeHalf } from "./half.js";

/** Calls fn(outIndex, aIndex, bIndex) over every element of outShape in row-major order. */
function forEachBroadcast(
  shape: readonly number[],
  aStrides: readonly number[],
  bStrides: readonly number[],
  fn: (o: number, ia: number, ib: number) => void,
): void {
  const nd = shape.length;
  let total = 1;
  for (const s of shape) total *= s;
  if (total === 0) return;
  const idx = new Array<number>(nd).fill(0);
  let ia = 0;
  let ib = 0;
  for (let o = 0; o < total; o++) {
    fn(o, ia, ib);
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]!++;
      ia += aStrides[d]!;
      ib += bStrides[d]!;
      if (idx[d]! < shape[d]!) break;
      ia -= aStrides[d]! * shape[d]!;
      ib -= bStrides[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
}

export function binary(
  op: "add" | "mul",
  out: Float32Array,
  a: Float32Array,
  b: Float32Array,
  outShape: readonly number[],
  aStrides: readonly number[],
  bStrides: readonly number[],
): void {
  if (op === "add") forEachBroadcast(outShape, aStrides, bStrides, (o, i, j) => (out[o] = a[i]! + b[j]!));
  else forEachBroadcast(outShape, aStrides, bStrides, (o, i, j) => (out[o] = a[i]! * b[j]!));
}

export function sumTo(
  out: Float32Array,
  g: Float32Array,
  gShape: readonly number[],
  outStrides: readonly number[],
): void {
  out.fill(0);
  const zeros = gShape.map(() => 0);
  forEachBroadcast(gShape, outStrides, zeros, (o, i) => (out[i]! += g[o]!));
}

export function scale(out: Float32Array, x: Float32Array, s: number): void {
  for (let i = 0; i < x.length; i++) out[i] = s * x[i]!;
}

export function slice(
  out: Float32Array,
  x: Float32Array,
  rows: number,
  C: number,
  start: number,
  len: number,
) {
  for (let r = 0; r < rows; r++) out.set(x.subarray(r * C + start, r * C + start + len), r * len);
}

export function sliceBackward(
  dx: Float32Array,
  dout: Float32Array,
  rows: number,
  C: number,
  start: number,
  len: number,
): void {
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < len; j++) dx[r * C + start + j]! += dout[r * len + j]!;
  }
}

export function embeddingForward(out: Float32Array, weight: WeightArray, ids: Int32Array, C: number): void {
  for (let n = 0; n < ids.length; n++) {
    const row = ids[n]! * C;
    out.set(isHalf(weight) ? decodeHalf(weight, row, C) : weight.subarray(row, row + C), n * C);
  }
}

export function embeddingBackward(
  dweight: Float32Array,
  dout: Float32Array,
  ids: Int32Array,
  C: number,
): void {
  for (let n = 0; n < ids.length; n++) {
    const row = ids[n]! * C;
    for (let c = 0; c < C; c++) dweight[row + c]! += dout[n * C + c]!;
  }
}

const GELU_K = Math.sqrt(2 / Math.PI);

// gelu(x) = 0.5 x (1 + tanh(k (x + 0.044715 x^3)))
export function geluForward(out: Float32Array, x: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    out[i] = 0.5 * v * (1 + Math.tanh(GELU_K * (v + 0.044715 * v * v * v)));
  }
}

export function geluBackward(dx: Float32Array, dout: Float32Array, x: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    const t = Math.tanh(GELU_K * (v + 0.044715 * v * v * v));
    const dt = (1 - t * t) * GELU_K * (1 + 3 * 0.044715 * v * v);
    dx[i] = dout[i]! * (0.5 * (1 + t) + 0.5 * v * dt);
  }
}

// out = cap · tanh(x / cap)
export function softcapForward(out: Float32Array, x: Float32Array, cap: number): void {
  for (let i = 0; i < x.length; i++) out[i] = cap * Math.tanh(x[i]! / cap);
}

// dx = dout · (1 - tanh²), tanh = y / cap from the forward output y
export function softcapBackward(dx: Float32Array, dout: Float32Array, y: Float32Array, cap: number): void {
  for (let i = 0; i < y.length; i++) {
    const t = y[i]! / cap;
    dx[i] = dout[i]! * (1 - t * t);
  }
}

// silu(x) = x * sigmoid(x)
export function siluForward(out: Float32Array, x: Float32Array): void {
  for (let i = 0; i < x.length; i++) out[i] = x[i]! / (1 + Math.exp(-x[i]!));
}

export function siluBackward(dx: Float32Array, dout: Float32Array, x: Float32Array): void {
  for (let i = 0; i < x.length; i++) {
    const s = 1 / (1 + Math.exp(-x[i]!));
    dx[i] = dout[i]! * s * (1 + x[i]! * (1 - s));
  }
}
