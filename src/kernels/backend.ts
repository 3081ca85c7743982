/**
 * The kernel interface. Every heavy numeric loop of the toolkit runs behind it, so a faster backend
 * (WebAssembly SIMD, native) changes no model code. `ref` is the plain-TypeScript oracle.
 *
 * Conventions (llm.c style): outputs first, then inputs, then dims. Buffers are row-major f32.
 * Names: B batch, T time, C channels, H heads, D head dim, V vocab, N rows (= B*T).
 * Unless a kernel says "accumulates", it overwrites its outputs.
 */

import type { HalfBits } from "../tensor/dtype.js";

export interface MatmulDims {
  /** Number of independent products. */
  batch: number;
  M: number;
  N: number;
  K: number;
  /** A is stored [K, M] (read transposed) instead of [M, K]. */
  transA: boolean;
  /** B is stored [N, K] (read transposed) instead of [K, N]. */
  transB: boolean;
  /** Element offsets between consecutive batch items; 0 broadcasts one operand. */
  strideA: number;
  strideB: number;
  strideOut: number;
  /** Add into `out` instead of overwriting it. */
  accumulate: boolean;
  /** A batch-invariant product (autograd/invariant.ts): at most `invariantRows` rows, each of which must
   *  get the bits it gets alone (M = 1). A backend invariant at any M ignores it. */
  rowInvariant?: boolean;
}

/**
 * A frozen weight stored in 16 bits (`--base-dtype`), only ever the `b` operand of matmul or the table of
 * embeddingForward. Semantics, which every backend follows and the ref backend defines:
 * - bf16: a product with it is bf16 × bf16: the other operand is rounded to bf16 (nearest even), the
 *   product is exact in f32 and sums are f32, as torch.autocast(bfloat16) and the CPU's bf16 dot-product
 *   instructions (AVX512_BF16 vdpbf16ps, Arm BFDOT) compute. This is what makes bf16 fast. (vdpbf16ps also
 *   flushes subnormals to zero, below 1e-38: far under any tolerance.)
 * - f16: decoded to f32 exactly, then f32 math (no CPU here multiplies f16 faster than f32).
 * An embedding lookup decodes the rows exactly for either dtype.
 */
export type HalfArray = HalfBits;

/** A weight operand: f32, or a frozen 16-bit weight. */
export type WeightArray = Float32Array | HalfArray;

export function isHalf(w: WeightArray): w is HalfArray {
  return !(w instanceof Float32Array);
}

/** Dims of one plain product (batch 1): out[M, N] (+)= op(a)[M, K] @ op(b)[K, N]. */
export function singleMatmul(
  M: number,
  N: number,
  K: number,
  opts: { transA?: boolean; transB?: boolean; accumulate?: boolean; rowInvariant?: boolean } = {},
): MatmulDims {
  const { transA = false, transB = false, accumulate = false, rowInvariant = false } = opts;
  return {
    batch: 1,
    M,
    N,
    K,
    transA,
    transB,
    strideA: 0,
    strideB: 0,
    strideOut: 0,
    accumulate,
    rowInvariant,
  };
}

export interface AttentionDims {
  B: number;
  Tq: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  /** Query i sits at absolute position Tk - Tq + i and sees keys 0..Tk-Tq+i. */
  causal: boolean;
  /** Scores are q·k times this (default 1/√D; Gemma 3: query_pre_attn_scalar^-1/2). */
  scale?: number;
  /**
   * Sliding-window attention (causal only; 0 or absent: none): the query at position p sees only the
   * keys j with p - window < j <= p, as transformers' sliding_window masks.
   */
  window?: number;
  /**
   * Attention logit soft-capping (Gemma 2/3's attn_logit_softcapping; 0 or absent: none): the scaled
   * score s becomes cap · tanh(s / cap) before the mask and the softmax, as transformers' eager
   * attention does. The backward multiplies the score's gradient by 1 - tanh²(s / cap), recomputing s.
   */
  softcap?: number;
}

/** The keys query row i sees: [start, limit) (a causal row stops at its position; a window starts later). */
export function keyRange(d: AttentionDims, i: number): [number, number] {
  const pos = d.Tk - d.Tq + i;
  const limit = d.causal ? pos + 1 : d.Tk;
  const start = d.causal && d.window ? Math.max(0, pos - d.window + 1) : 0;
  return [start, limit];
}

/** The attention scale of `d`. */
export const attentionScale = (d: AttentionDims) => d.scale ?? 1 / Math.sqrt(d.D);

export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step number, for bias correction. */
  step: number;
}

/** One adapter's LoRA weights on one layer, as the batched-decode row kernels take them. */
export interface LoraRowWeights {
  readonly A: Float32Array; // [r, inF]
  readonly B: Float32Array; // [outF, r]
  readonly r: number;
  readonly scaling: number;
}

export interface Backend {
  readonly name: string;
  /** True when a matmul with a bf16 weight runs faster than with f32 here, so `--base-dtype auto` picks
   *  bf16 on this backend (native: a fixed rule from measurements, native/src/gemm.cc gemm_bf16_faster).
   *  It must not change between processes on one machine: a run and its resume pick the same dtype. */
  readonly fastBf16?: boolean;
  /**
   * Batch invariance of matmul with a transposed weight (x @ W^T, as every Linear computes it): a
   * product of at most this many rows, marked `rowInvariant`, gives each output row the bits that row
   * alone (M = 1) gives. Absent: any number of rows does (ref and wasm sum every element over k in one
   * order whatever M is). native: 64, its INVARIANT_ROWS: a marked product up to there takes the GEMV,
   * whose dots are the same for any M; unmarked products above 8 rows take the packed FMA tiles, which
   * sum in another order (see native/src/gemm.cc).
   * A batched decode (autograd/invariant.ts) splits its products into chunks of this many rows, so a
   * sequence's numbers do not depend on the batch it runs in.
   */
  readonly invariantRows?: number;

  // out[b]: [M, N] = op(a[b]): [M, K] @ op(b[b]): [K, N]; b may be a frozen 16-bit weight (see HalfArray)
  matmul(out: Float32Array, a: Float32Array, b: WeightArray, d: MatmulDims): void;

  // out[i] = a[i·aStrides] (+|*) b[i·bStrides], i over outShape (strides are 0 on broadcast dims)
  binary(
    op: "add" | "mul",
    out: Float32Array,
    a: Float32Array,
    b: Float32Array,
    outShape: readonly number[],
    aStrides: readonly number[],
    bStrides: readonly number[],
  ): void;
  // out (zeroed first): sum of g over the dims where outStrides is 0; g: [gShape]
  sumTo(out: Float32Array, g: Float32Array, gShape: readonly number[], outStrides: readonly number[]): void;
  // out = s * x
  scale(out: Float32Array, x: Float32Array, s: number): void;

  // x: [rows, C] -> out: [rows, len] = x[:, start:start+len]
  slice(out: Float32Array, x: Float32Array, rows: number, C: number, start: number, len: number): void;
  // dx: [rows, C] accumulates dout: [rows, len] into columns start:start+len
  sliceBackward(
    dx: Float32Array,
    dout: Float32Array,
    rows: number,
    C: number,
    start: number,
    len: number,
  ): void;

  // weight: [V, C], ids: [N] -> out: [N, C] (16-bit rows decoded exactly)
  embeddingForward(out: Float32Array, weight: WeightArray, ids: Int32Array, C: number): void;
  // dweight: [V, C] accumulates dout: [N, C] at rows ids
  embeddingBackward(dweight: Float32Array, dout: Float32Array, ids: Int32Array, C: number): void;

  // x: [N, C] -> out: [N, C]; mean, rstd: [N] saved for backward
  layerNormForward(
    out: Float32Array,
    mean: Float32Array,
    rstd: Float32Array,
    x: Float32Array,
    weight: Float32Array,
    bias: Float32Array,
    N: number,
    C: number,
    eps: number,
  ): void;
  // dx: [N, C] overwritten; dweight, dbias: [C] accumulate (null when not needed)
  layerNormBackward(
    dx: Float32Array | null,
    dweight: Float32Array | null,
    dbias: Float32Array | null,
    dout: Float32Array,
    x: Float32Array,
    weight: Float32Array,
    mean: Float32Array,
    rstd: Float32Array,
    N: number,
    C: number,
  ): void;

  // x: [N, C] -> out: [N, C] = x * rstd * weight; rstd: [N]
  rmsNormForward(
    out: Float32Array,
    rstd: Float32Array,
    x: Float32Array,
    weight: Float32Array,
    N: number,
    C: number,
    eps: number,
  ): void;
  rmsNormBackward(
    dx: Float32Array | null,
    dweight: Float32Array | null,
    dout: Float32Array,
    x: Float32Array,
    weight: Float32Array,
    rstd: Float32Array,
    N: number,
    C: number,
  ): void;

  // elementwise; GELU is the tanh approximation (GPT-2's gelu_new)
  geluForward(out: Float32Array, x: Float32Array): void;
  geluBackward(dx: Float32Array, dout: Float32Array, x: Float32Array): void;
  siluForward(out: Float32Array, x: Float32Array): void;
  siluBackward(dx: Float32Array, dout: Float32Array, x: Float32Array): void;
  // logit soft-capping: out = cap · tanh(x / cap); the backward reads the output y: dx = dout · (1 - (y/cap)²)
  softcapForward(out: Float32Array, x: Float32Array, cap: number): void;
  softcapBackward(dx: Float32Array, dout: Float32Array, y: Float32Array, cap: number): void;

  // x: [N, C] -> out: [N, C], softmax over C
  softmaxForward(out: Float32Array, x: Float32Array, N: number, C: number): void;
  // y: the forward output
  softmaxBackward(dx: Float32Array, dout: Float32Array, y: Float32Array, N: number, C: number): void;

  // x: [B, T, H, D] -> out: [B, T, H, D], rotate-half RoPE at positions offset..offset+T-1 on the first
  // R = 2·freqs.length <= D dims (partial rotary; the rest pass through): the pair (i, i + R/2) turns by
  // the angle pos · freqs[i] (freqs: [R/2] inverse frequencies, f64; angles and cos/sin in f64), and both
  // are multiplied by `scale` (LongRoPE's attention factor; 1 otherwise); inverse rotates the other way
  // (that is the backward).
  rope(
    out: Float32Array,
    x: Float32Array,
    B: number,
    T: number,
    H: number,
    D: number,
    offset: number,
    freqs: Float64Array,
    scale: number,
    inverse: boolean,
  ): void;

  /**
   * A batched decode's RoPE (optional; without it autograd/rows.ts calls rope per row): x, out [B, 1, H, D],
   * row b at position offsets[b], all rows with the same freqs and scale (forward only). Row b must be,
   * bit for bit, rope of that row alone (B 1, T 1, offset offsets[b]).
   */
  ropeRows?(
    out: Float32Array,
    x: Float32Array,
    B: number,
    H: number,
    D: number,
    offsets: readonly number[],
    freqs: Float64Array,
    scale: number,
  ): void;

  // q: [B, Tq, Hq, D], k, v: [B, Tk, Hkv, D] -> out: [B, Tq, Hq, D]; att: [B, Hq, Tq, Tk] probabilities
  attentionForward(
    out: Float32Array,
    att: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    d: AttentionDims,
  ): void;
  /**
   * A batched decode's attention over caches in one pool (optional; without it autograd/rows.ts writes
   * the rows and calls attentionForward per row): q, out [B, 1, Hq, D]; k, v [B, 1, Hkv, D], each row's
   * new key and value; keys, values [P, Hkv, D], one layer of the pool (nn/kv-pool.ts); at [2B]: row b's
   * cache lies at positions [at[2b], at[2b] + at[2b + 1]). Writes row b's k and v at position
   * at[2b] + at[2b + 1], then row b must be, bit for bit, attentionForward of that row alone over its
   * at[2b + 1] + 1 positions (B 1, Tq 1, the rest from `d`).
   */
  attentionRowsForward?(
    out: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    keys: Float32Array,
    values: Float32Array,
    at: Int32Array,
    d: AttentionDims,
  ): void;
  /**
   * A batched decode's LoRA term of one layer (optional; without it autograd/rows.ts loraRows runs it
   * with matmul and scale): group g is adapter `weights[g]` on the rows `rows[g]`; y [N, outF]
   * accumulates, on each group's rows, (scaling · x[rows] A^T) B^T with x [N, inF], A [r, inF],
   * B [outF, r], in place, each product in chunks of at most `chunk` rows. Must give the bits of that
   * path: matmul x A^T, scale, matmul B^T, an f32 add. A backend may keep a copy of each A or B made for
   * its kernel, by the array: an adapter whose values change must come with new arrays (served adapters
   * never change; a new or replaced one has its own); likewise what it derives from a frozen `rows` or
   * `weights` array, by that array: one passed frozen is not changed, its row arrays and weights
   * objects included (a batch plan's rows, autograd/rows.ts packRows, passed to every layer on every
   * step until the batch changes; a layer's weights, frozen rowWeights objects).
   */
  loraRowsForward?(
    y: Float32Array,
    x: Float32Array,
    inF: number,
    outF: number,
    weights: readonly LoraRowWeights[],
    rows: readonly Int32Array[],
    chunk: number,
  ): void;
  /**
   * A batched decode's adapted layer in one call (optional; without it autograd/rows.ts runs matmul,
   * then loraRowsForward): y [M, N] = x [M, K] @ W^T (W [N, K]) as `matmul` with rowInvariant, in
   * chunks of at most `chunk` rows, then loraRowsForward(y, x, K, N, weights, rows, chunk). Must give
   * the bits of those two calls; the same contract on A, B and rows.
   */
  linearRowsForward?(
    y: Float32Array,
    x: Float32Array,
    w: WeightArray,
    M: number,
    N: number,
    K: number,
    weights: readonly LoraRowWeights[],
    rows: readonly Int32Array[],
    chunk: number,
  ): void;
  // dq, dk, dv overwritten (null when not needed)
  attentionBackward(
    dq: Float32Array | null,
    dk: Float32Array | null,
    dv: Float32Array | null,
    dout: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    att: Float32Array,
    d: AttentionDims,
  ): void;

  // logits: [N, V], targets: [N] (negative = ignored) -> losses: [N] (0 where ignored), lse: [N]
  crossEntropyForward(
    losses: Float32Array,
    lse: Float32Array,
    logits: Float32Array,
    targets: Int32Array,
    N: number,
    V: number,
  ): void;
  // dlogits: [N, V] = scale * (softmax(logits) - onehot(target)); rows with ignored targets get 0
  crossEntropyBackward(
    dlogits: Float32Array,
    logits: Float32Array,
    lse: Float32Array,
    targets: Int32Array,
    N: number,
    V: number,
    scale: number,
  ): void;

  // one AdamW step in place: m, v are the moment buffers; weightDecay is decoupled (0 gives Adam)
  adamw(param: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, p: AdamWParams): void;
}
