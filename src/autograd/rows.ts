/**
 * Ops of a batched decode step, where each row of the batch is its own sequence: its own position,
 * its own KV cache (ragged lengths), its own adapter. Each runs the same kernel on each row that the
 * single-sequence op runs on that sequence alone (a batch of one), so a row's bits do not depend on
 * the batch. Inference only: they record nothing, and refuse inputs that need a gradient.
 */
import { backend, type LoraRowWeights } from "../kernels/index.js";
import { floats } from "../tensor/alloc.js";
import { check, shapeStr } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";
import { invariantChunk, matmulRows } from "./invariant.js";
import { type AttentionOptions, attentionDims, matmul } from "./ops.js";
import { needsTape } from "./tape.js";

function inferenceOnly(op: string, inputs: readonly Tensor[]): void {
  check(
    !needsTape(inputs),
    () => `${op}: a batched-decode op has no gradient; run it under noGrad (inference only)`,
  );
  for (const t of inputs)
    check(!t.half, () => `${op}: input ${shapeStr(t.shape)} is a ${t.dtype} weight; it takes f32 only`);
}

/** One row's rotary embedding: inverse frequencies and the cos/sin factor (models/rope.ts RotaryPass). */
export interface RowRotary {
  freqs: Float64Array;
  scale: number;
}

/**
 * RoPE with a position per row: x [B, 1, H, D], row b at position offsets[b], with its own rotary
 * pass (`rope` of that row alone at that offset).
 */
export function ropeRows(x: Tensor, offsets: readonly number[], rots: readonly RowRotary[]): Tensor {
  inferenceOnly("ropeRows", [x]);
  const [B, T, H, D] = x.shape as [number, number, number, number];
  check(
    x.ndim === 4 && T === 1 && D % 2 === 0 && offsets.length === B && rots.length === B,
    () =>
      `ropeRows: need x [B, 1, H, D] with even D and B offsets and rotaries; got ${shapeStr(x.shape)}, ${offsets.length}, ${rots.length}`,
  );
  const out = floats(x.size);
  const n = H * D;
  for (const { freqs } of rots)
    check(freqs.length * 2 <= D, () => `ropeRows: ${freqs.length} frequencies for head dim ${D}`);
  const k = backend();
  const { freqs, scale } = rots[0] ?? { freqs: new Float64Array(0), scale: 1 };
  if (k.ropeRows && rots.every((r) => r.freqs === freqs && r.scale === scale)) {
    // one call for the batch (every row at its own position, the same rotary pass)
    k.ropeRows(out, x.data, B, H, D, offsets, freqs, scale);
    return new Tensor(out, x.shape);
  }
  for (let b = 0; b < B; b++) {
    const r = [b * n, (b + 1) * n] as const;
    k.rope(
      out.subarray(...r),
      x.data.subarray(...r),
      1,
      1,
      H,
      D,
      offsets[b]!,
      rots[b]!.freqs,
      rots[b]!.scale,
      false,
    );
  }
  return new Tensor(out, x.shape);
}

/**
 * Attention of one new query per row over that row's own KV cache, every cache a region of one pool
 * (nn/kv-pool.ts): q [B, 1, Hq, D]; k, v [B, 1, Hkv, D], each row's new key and value; keys, values
 * [P, Hkv, D], one layer of the pool; at [2B]: row b's cache lies at positions [at[2b], at[2b] + at[2b+1]).
 * Row b's k and v are written at the position after its cache, then row b is `attention` of that row
 * alone over its at[2b+1] + 1 positions -> [B, 1, Hq, D].
 */
export function attentionRows(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  keys: Float32Array,
  values: Float32Array,
  at: Int32Array,
  opts: AttentionOptions = {},
): Tensor {
  inferenceOnly("attentionRows", [q, k, v]);
  const [B, T, Hq, D] = q.shape as [number, number, number, number];
  const Hkv = k.shape[2]!;
  const row = Hkv * D;
  const P = keys.length / row;
  check(
    q.ndim === 4 &&
      T === 1 &&
      k.ndim === 4 &&
      k.shape[0] === B &&
      k.shape[1] === 1 &&
      k.shape[3] === D &&
      v.size === k.size &&
      keys.length === values.length &&
      Number.isInteger(P) &&
      at.length >= 2 * B,
    () =>
      `attentionRows: need q [B, 1, Hq, D], k and v [B, 1, Hkv, D], a pool [P, Hkv, D] and 2B places; got ${shapeStr(q.shape)}, ${shapeStr(k.shape)}, ${shapeStr(v.shape)}, ${keys.length} and ${values.length} values, ${at.length} places`,
  );
  for (let b = 0; b < B; b++)
    check(
      at[2 * b]! >= 0 && at[2 * b + 1]! >= 0 && at[2 * b]! + at[2 * b + 1]! + 1 <= P,
      () =>
        `attentionRows: row ${b}'s cache [${at[2 * b]}, ${at[2 * b]! + at[2 * b + 1]!}) and its new position do not fit the pool's ${P} positions`,
    );
  // the options and head counts checked once, as attention checks them
  const shape = (H: number) => new Tensor(new Float32Array(0), [0, 1, H, D]);
  const dims = attentionDims(shape(Hq), shape(Hkv), shape(Hkv), opts);
  const out = floats(q.size);
  const kernel = backend();
  if (kernel.attentionRowsForward && B > 0) {
    kernel.attentionRowsForward(out, q.data, k.data, v.data, keys, values, at, { ...dims, B, Tk: 0 });
    return new Tensor(out, q.shape);
  }
  const n = Hq * D;
  for (let b = 0; b < B; b++) {
    const [first, Tk] = [at[2 * b]!, at[2 * b + 1]! + 1];
    const end = (first + Tk - 1) * row;
    keys.set(k.data.subarray(b * row, (b + 1) * row), end);
    values.set(v.data.subarray(b * row, (b + 1) * row), end);
    const r = [b * n, (b + 1) * n] as const;
    const cache = [first * row, (first + Tk) * row] as const;
    kernel.attentionForward(
      out.subarray(...r),
      new Float32Array(Hq * Tk),
      q.data.subarray(...r),
      keys.subarray(...cache),
      values.subarray(...cache),
      { ...dims, B: 1, Tk },
    );
  }
  return new Tensor(out, q.shape);
}

/** One adapter's low-rank term on the rows that use it: y[rows] += (scaling · x[rows] A^T) B^T. */
export interface RowGroup {
  rows: readonly number[] | Int32Array;
  A: Tensor; // [r, in]
  B: Tensor; // [out, r]
  scaling: number;
}

/**
 * Row groups in the kernels' form, checked against a layer's sizes (in, out) and a batch of N rows:
 * group g is adapter `weights[g]` on the rows `rows[g]`. The two halves are made apart (rowWeights
 * once per adapter and layer, packRows once per batch plan) and passed every step: a plan's rows are
 * the same in every layer, and a layer's weights in every plan.
 */
export interface PackedRowGroups {
  readonly inF: number;
  readonly outF: number;
  readonly N: number;
  readonly weights: readonly LoraRowWeights[];
  readonly rows: readonly Int32Array[];
}

/** An adapter's A [r, in] and B [out, r] checked for a layer in -> out, in the kernels' form (frozen). */
export function rowWeights(A: Tensor, B: Tensor, scaling: number, inF: number, outF: number): LoraRowWeights {
  inferenceOnly("loraRows", [A, B]);
  const r = A.shape[0]!;
  check(
    A.ndim === 2 && B.ndim === 2 && A.shape[1] === inF && B.shape[0] === outF && B.shape[1] === r,
    () => `loraRows: A ${shapeStr(A.shape)} and B ${shapeStr(B.shape)} do not fit ${inF} -> ${outF}`,
  );
  return Object.freeze({ A: A.data, B: B.data, r, scaling });
}

/**
 * Each group's rows checked against a batch of N rows, copied and frozen: a backend may keep what it
 * derives from the array (its index), so it must not change.
 */
export function packRows(
  rows: readonly (readonly number[] | Int32Array)[],
  N: number,
): readonly Int32Array[] {
  for (const rs of rows)
    for (const row of rs)
      if (!(Number.isInteger(row) && row >= 0 && row < N))
        throw new Error(`loraRows: row ${row} is outside 0..${N - 1}`);
  return Object.freeze(rows.map((rs) => Int32Array.from(rs)));
}

/** Checks `groups` for a layer in -> out over N rows and packs them for the kernels. */
export function packRowGroups(
  groups: readonly RowGroup[],
  inF: number,
  outF: number,
  N: number,
): PackedRowGroups {
  return {
    inF,
    outF,
    N,
    weights: Object.freeze(groups.map((g) => rowWeights(g.A, g.B, g.scaling, inF, outF))),
    rows: packRows(
      groups.map((g) => g.rows),
      N,
    ),
  };
}

/** `groups` as packed for these sizes: packed ones are checked to fit them, plain ones packed now. */
function packedFor(
  groups: readonly RowGroup[] | PackedRowGroups,
  inF: number,
  outF: number,
  N: number,
): PackedRowGroups {
  if (Array.isArray(groups)) return packRowGroups(groups, inF, outF, N);
  const p = groups as PackedRowGroups;
  check(
    p.inF === inF && p.outF === outF && p.N === N,
    () =>
      `loraRows: groups packed for ${p.N} rows of ${p.inF} -> ${p.outF}, used for ${N} rows of ${inF} -> ${outF}`,
  );
  check(
    p.weights.length === p.rows.length,
    () => `loraRows: ${p.weights.length} adapters' weights for ${p.rows.length} row groups`,
  );
  return p;
}

/**
 * The gathered LoRA term of a batch whose rows use different adapters (Punica's BGMV, as one grouped
 * product per adapter): y [..., out] (base products of every row, the caller's own: it is updated in
 * place and returned), x [..., in] -> y plus, on each group's rows, scaling · (x A^T) B^T. Row by row the
 * same kernels as MultiLoRALinear with that one adapter active (matmul, scale, matmul), in
 * batch-invariant chunks; rows in no group keep y. The final y + delta is added here in f64 and rounded
 * to f32, which is the f32 sum every backend's add computes (a sum of two f32 values rounded once from f64
 * is the correctly rounded f32 sum). A backend with `loraRowsForward` runs all groups in one call
 * instead (`noKernel`: the per-kernel path, to test it).
 */
export function loraRows(
  y: Tensor,
  x: Tensor,
  groups: readonly RowGroup[] | PackedRowGroups,
  noKernel = false,
): Tensor {
  inferenceOnly("loraRows", [y, x]);
  const inF = x.shape[x.ndim - 1]!;
  const outF = y.shape[y.ndim - 1]!;
  const N = x.size / inF;
  check(
    y.size / outF === N,
    () => `loraRows: x ${shapeStr(x.shape)} and y ${shapeStr(y.shape)} have different numbers of rows`,
  );
  const { weights, rows: groupRows } = packedFor(groups, inF, outF, N);
  const out = y.data;
  const xd = x.data;
  const k = backend();
  if (k.loraRowsForward && !noKernel) {
    k.loraRowsForward(out, xd, inF, outF, weights, groupRows, invariantChunk());
    return y;
  }
  weights.forEach(({ A, B, r, scaling }, g) => {
    const rows = groupRows[g]!;
    const m = rows.length;
    const xs = new Float32Array(m * inF);
    for (let i = 0; i < m; i++) {
      const from = rows[i]! * inF;
      for (let j = 0; j < inF; j++) xs[i * inF + j] = xd[from + j]!;
    }
    const ax = new Float32Array(m * r);
    matmulRows(ax, xs, A, m, r, inF, true);
    k.scale(ax, ax, scaling);
    const delta = new Float32Array(m * outF);
    matmulRows(delta, ax, B, m, outF, r, true);
    for (let i = 0; i < m; i++) {
      const to = rows[i]! * outF;
      for (let j = 0; j < outF; j++) out[to + j] = out[to + j]! + delta[i * outF + j]!;
    }
  });
  return y;
}

/**
 * A batched decode's adapted layer with no bias: x [..., in] @ weight^T (weight [out, in], f32 or 16-bit)
 * plus each group's term on its rows: the bits of loraRows(matmul(x, weight, { transB: true }), x,
 * groups), in one backend call where the backend has `linearRowsForward` and the product runs
 * batch-invariant (autograd/invariant.ts), as a batched decode's does. `noKernel`: the two calls.
 */
export function linearRows(
  x: Tensor,
  weight: Tensor,
  groups: readonly RowGroup[] | PackedRowGroups,
  noKernel = false,
): Tensor {
  const k = backend();
  const chunk = invariantChunk();
  const [N, K] = weight.shape as [number, number];
  if (
    !k.linearRowsForward ||
    noKernel ||
    !Number.isFinite(chunk) ||
    weight.ndim !== 2 ||
    x.shape.at(-1) !== K
  )
    return loraRows(matmul(x, weight, { transB: true }), x, groups, noKernel);
  inferenceOnly("linearRows", [x]);
  check(!needsTape([weight]), () => "linearRows: the base weight needs a gradient; run it under noGrad");
  const M = x.size / K;
  const packed = packedFor(groups, K, N, M);
  const out = floats(M * N);
  k.linearRowsForward(out, x.data, weight.weights(), M, N, K, packed.weights, packed.rows, chunk);
  return new Tensor(out, [...x.shape.slice(0, -1), N]);
}
