/**
 * Differentiable ops. Each checks its inputs, runs one forward kernel from the active backend,
 * and records itself on the tape (only when some input requires grad).
 */
import { type AttentionDims, backend, singleMatmul } from "../kernels/index.js";
import { floats } from "../tensor/alloc.js";
import type { Rng } from "../tensor/random.js";
import { broadcastShapes, broadcastStrides, check, numel, sameShape, shapeStr } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";
import { matmulRows } from "./invariant.js";
import { needsTape, record } from "./tape.js";

const empty = (shape: readonly number[]) => floats(numel(shape));
const last = (t: Tensor) => t.shape[t.shape.length - 1]!;

/** Refuses a 16-bit frozen weight (--base-dtype) in an op that only takes f32 tensors. */
function floatOnly(op: string, ...inputs: Tensor[]): void {
  for (const t of inputs) {
    if (t.half) {
      throw new Error(
        `${op}: input ${shapeStr(t.shape)} is a ${t.dtype} frozen weight, which only matmul (as operand b) and embedding take; convert it with toFloat32() first, or load the model with --base-dtype f32`,
      );
    }
  }
}

/** Batch/matrix dims of a matmul, shared by its forward and gradient rule. */
export function matmulShapes(a: Tensor, b: Tensor, transA: boolean, transB: boolean) {
  check(
    a.ndim >= 2 && b.ndim >= 2,
    () => `matmul: operands need 2+ dims, got ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`,
  );
  const batchDims = a.shape.slice(0, -2);
  const [M, Ka] = transA ? [last(a), a.shape[a.ndim - 2]!] : [a.shape[a.ndim - 2]!, last(a)];
  const [Kb, N] = transB ? [last(b), b.shape[b.ndim - 2]!] : [b.shape[b.ndim - 2]!, last(b)];
  const bBroadcast = b.ndim === 2;
  check(
    bBroadcast || sameShape(b.shape.slice(0, -2), batchDims),
    () =>
      `matmul: batch dims of ${shapeStr(a.shape)} and ${shapeStr(b.shape)} differ (b must be 2-D or match)`,
  );
  check(
    Ka === Kb,
    () =>
      `matmul: inner dims differ: ${shapeStr(a.shape)}${transA ? "ᵀ" : ""} @ ${shapeStr(b.shape)}${transB ? "ᵀ" : ""} (${Ka} vs ${Kb})`,
  );
  return { batchDims, batch: numel(batchDims), M, N, K: Ka, bBroadcast };
}

/**
 * op(a) @ op(b). a: [..., M, K] (or [..., K, M] with transA); b: [K, N] (or [N, K]), 2-D or batched like a.
 * b may be a frozen 16-bit weight (with transA false): bf16 rounds a to bf16 for the products, f16 is
 * decoded exactly (see the kernels' HalfArray); the gradient for a follows the same rule.
 */
export function matmul(a: Tensor, b: Tensor, opts: { transA?: boolean; transB?: boolean } = {}): Tensor {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  floatOnly("matmul (operand a)", a);
  check(
    !(b.half && transA),
    () => `matmul: a ${b.dtype} weight ${shapeStr(b.shape)} needs transA false (only x @ W is supported)`,
  );
  const { batchDims, batch, M, N, K, bBroadcast } = matmulShapes(a, b, transA, transB);
  const outShape = [...batchDims, M, N];
  const out = empty(outShape);
  if (bBroadcast && !transA) {
    // fold the batch into the rows: [batch*M, K] @ [K, N]; in batch-invariant mode, in row chunks
    matmulRows(out, a.data, b.weights(), batch * M, N, K, transB);
  } else {
    backend().matmul(out, a.data, b.weights(), {
      batch,
      M,
      N,
      K,
      transA,
      transB,
      strideA: M * K,
      strideB: bBroadcast ? 0 : K * N,
      strideOut: M * N,
      accumulate: false,
    });
  }
  return record("matmul", [a, b], new Tensor(out, outShape), { transA, transB }, null);
}

function broadcastBinary(op: "add" | "mul", a: Tensor, b: Tensor): Tensor {
  floatOnly(op, a, b);
  const shape = broadcastShapes(a.shape, b.shape, op);
  const out = empty(shape);
  backend().binary(
    op,
    out,
    a.data,
    b.data,
    shape,
    broadcastStrides(a.shape, shape),
    broadcastStrides(b.shape, shape),
  );
  return record(op, [a, b], new Tensor(out, shape), null, null);
}

/** a + b with numpy broadcasting. */
export const add = (a: Tensor, b: Tensor): Tensor => broadcastBinary("add", a, b);
/** a * b with numpy broadcasting. */
export const mul = (a: Tensor, b: Tensor): Tensor => broadcastBinary("mul", a, b);

/** s * x for a constant s. */
export function scale(x: Tensor, s: number): Tensor {
  floatOnly("scale", x);
  const out = empty(x.shape);
  backend().scale(out, x.data, s);
  return record("scale", [x], new Tensor(out, x.shape), { s }, null);
}

/** The sum of all elements, as a scalar of shape []. */
export function sum(x: Tensor): Tensor {
  floatOnly("sum", x);
  let s = 0;
  for (let i = 0; i < x.size; i++) s += x.data[i]!;
  return record("sum", [x], new Tensor(new Float32Array([s]), []), null, null);
}

/** The same data under another shape (one dim may be -1). Shares storage with x. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  floatOnly("reshape", x);
  const known = shape.filter((d) => d !== -1);
  const inferred = shape.length - known.length;
  check(inferred <= 1, () => `reshape: at most one -1 allowed, got ${shapeStr(shape)}`);
  const fill = inferred ? x.size / numel(known) : 1;
  const resolved = shape.map((d) => (d === -1 ? fill : d));
  check(
    Number.isInteger(fill) && numel(resolved) === x.size,
    () => `reshape: cannot view ${shapeStr(x.shape)} (${x.size} values) as ${shapeStr(shape)}`,
  );
  return record("reshape", [x], new Tensor(x.data, resolved), null, null);
}

/** x[..., start:start+length] along the last dim. */
export function slice(x: Tensor, start: number, length: number): Tensor {
  floatOnly("slice", x);
  const C = last(x);
  check(
    Number.isInteger(start) && Number.isInteger(length) && start >= 0 && length >= 0 && start + length <= C,
    () => `slice: [${start}, ${start + length}) is outside the last dim of ${shapeStr(x.shape)}`,
  );
  const shape = [...x.shape.slice(0, -1), length];
  const out = empty(shape);
  backend().slice(out, x.data, x.size / C, C, start, length);
  return record("slice", [x], new Tensor(out, shape), { start, length }, null);
}

/** Rows of weight: [V, C] picked by ids (shape idsShape) -> [...idsShape, C]. */
export function embedding(
  weight: Tensor,
  ids: Int32Array,
  idsShape: readonly number[] = [ids.length],
): Tensor {
  check(weight.ndim === 2, () => `embedding: weight must be [V, C], got ${shapeStr(weight.shape)}`);
  check(
    numel(idsShape) === ids.length,
    () => `embedding: ${ids.length} ids do not fill shape ${shapeStr(idsShape)}`,
  );
  const [V, C] = weight.shape as [number, number];
  for (const id of ids) {
    if (!(id >= 0 && id < V))
      throw new RangeError(`embedding: token id ${id} is outside the vocabulary [0, ${V})`);
  }
  const shape = [...idsShape, C];
  const out = empty(shape);
  backend().embeddingForward(out, weight.weights(), ids, C); // a 16-bit table is decoded exactly
  return record("embedding", [weight], new Tensor(out, shape), { ids }, null);
}

function checkNormParams(what: string, x: Tensor, ...params: Tensor[]): number {
  const C = last(x);
  for (const p of params) {
    check(
      p.ndim === 1 && p.shape[0] === C,
      () => `${what}: parameter ${shapeStr(p.shape)} does not match x ${shapeStr(x.shape)}`,
    );
  }
  return C;
}

/** Layer norm over the last dim (biased variance), then * weight + bias. */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor {
  floatOnly("layerNorm", x, weight, bias);
  const C = checkNormParams("layerNorm", x, weight, bias);
  const N = x.size / C;
  const out = empty(x.shape);
  const mean = new Float32Array(N);
  const rstd = new Float32Array(N);
  backend().layerNormForward(out, mean, rstd, x.data, weight.data, bias.data, N, C, eps);
  return record("layerNorm", [x, weight, bias], new Tensor(out, x.shape), { eps }, { mean, rstd });
}

/** RMS norm over the last dim: x / sqrt(mean(x²) + eps) * weight (Llama's RMSNorm). */
export function rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  floatOnly("rmsNorm", x, weight);
  const C = checkNormParams("rmsNorm", x, weight);
  const N = x.size / C;
  const out = empty(x.shape);
  const rstd = new Float32Array(N);
  backend().rmsNormForward(out, rstd, x.data, weight.data, N, C, eps);
  return record("rmsNorm", [x, weight], new Tensor(out, x.shape), { eps }, { rstd });
}

/** GELU, tanh approximation (GPT-2's gelu_new). */
export function gelu(x: Tensor): Tensor {
  floatOnly("gelu", x);
  const out = empty(x.shape);
  backend().geluForward(out, x.data);
  return record("gelu", [x], new Tensor(out, x.shape), null, null);
}

/** SiLU: x * sigmoid(x). */
export function silu(x: Tensor): Tensor {
  floatOnly("silu", x);
  const out = empty(x.shape);
  backend().siluForward(out, x.data);
  return record("silu", [x], new Tensor(out, x.shape), null, null);
}

/** Logit soft-capping, cap · tanh(x / cap), elementwise (Gemma's final_logit_softcapping). */
export function softcap(x: Tensor, cap: number): Tensor {
  floatOnly("softcap", x);
  check(cap > 0 && Number.isFinite(cap), () => `softcap: the cap must be a positive number, got ${cap}`);
  const out = empty(x.shape);
  backend().softcapForward(out, x.data, cap);
  return record("softcap", [x], new Tensor(out, x.shape), { cap }, null);
}

/** Softmax over the last dim. */
export function softmax(x: Tensor): Tensor {
  floatOnly("softmax", x);
  const C = last(x);
  const out = empty(x.shape);
  backend().softmaxForward(out, x.data, x.size / C, C);
  return record("softmax", [x], new Tensor(out, x.shape), null, null);
}

/**
 * Rotary position embedding (rotate-half convention) on x: [B, T, H, D] at positions offset..; pair
 * (i, i + R/2) turns by pos · freqs[i], with R = 2·freqs.length (R < D: partial rotary, the other dims
 * pass through), and cos/sin are multiplied by `scale` (LongRoPE's attention factor). `freqs` is a plain
 * theta for the original RoPE (theta^(-2i/D), see ropeFrequencies) or a model's inverse frequencies.
 */
export function rope(x: Tensor, offset: number, freqs: number | Float64Array, scale = 1): Tensor {
  floatOnly("rope", x);
  check(
    x.ndim === 4 && last(x) % 2 === 0,
    () => `rope: x must be [B, T, H, D] with even D, got ${shapeStr(x.shape)}`,
  );
  const [B, T, H, D] = x.shape as [number, number, number, number];
  const f = typeof freqs === "number" ? ropeFrequencies(D, freqs) : freqs;
  check(f.length * 2 <= D, () => `rope: ${f.length} frequencies for head dim ${D} (at most ${D / 2})`);
  const out = empty(x.shape);
  backend().rope(out, x.data, B, T, H, D, offset, f, scale, false);
  return record("rope", [x], new Tensor(out, x.shape), { offset, freqs: f, scale }, null);
}

/** The original RoPE's inverse frequencies theta^(-2i/D), i < D/2, in f64. */
export function ropeFrequencies(D: number, theta: number): Float64Array {
  return Float64Array.from({ length: D / 2 }, (_, i) => theta ** ((-2 * i) / D));
}

/** How attention masks, scales and caps its scores (see AttentionDims). */
export interface AttentionOptions {
  causal?: boolean;
  scale?: number;
  window?: number;
  /** Soft-capping of the scaled scores, cap · tanh(s / cap) (0 or absent: none). */
  softcap?: number;
}

/** Attention dims from q: [B, Tq, Hq, D], k, v: [B, Tk, Hkv, D]. */

export function attentionDims(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): AttentionDims {
  check(
    q.ndim === 4 && k.ndim === 4 && sameShape(k.shape, v.shape),
    () =>
      `attention: need q [B, Tq, Hq, D] and k, v [B, Tk, Hkv, D]; got ${shapeStr(q.shape)}, ${shapeStr(k.shape)}, ${shapeStr(v.shape)}`,
  );
  const [B, Tq, Hq, D] = q.shape as [number, number, number, number];
  const [Bk, Tk, Hkv, Dk] = k.shape as [number, number, number, number];
  check(
    B === Bk && D === Dk && Hq % Hkv === 0 && Tk >= Tq,
    () =>
      `attention: q ${shapeStr(q.shape)} and k ${shapeStr(k.shape)} disagree (batch, head dim, Hq % Hkv == 0, Tk >= Tq)`,
  );
  const { causal = true, scale, window, softcap } = opts;
  check(
    !window || (causal && Number.isInteger(window) && window > 0),
    () => `attention: a sliding window must be a positive integer on causal attention, got ${window}`,
  );
  check(
    !softcap || (softcap > 0 && Number.isFinite(softcap)),
    () => `attention: a soft cap must be a positive number, got ${softcap}`,
  );
  return {
    B,
    Tq,
    Tk,
    Hq,
    Hkv,
    D,
    causal,
    ...(scale !== undefined && { scale }),
    ...(window && { window }),
    ...(softcap && { softcap }),
  };
}

/**
 * Scaled dot-product attention, grouped-query, causal by default (scale 1/√D unless given; a sliding
 * window and a soft cap of the scores when given). Returns [B, Tq, Hq, D].
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  floatOnly("attention", q, k, v);
  const d = attentionDims(q, k, v, opts);
  const out = empty(q.shape);
  const att = new Float32Array(d.B * d.Hq * d.Tq * d.Tk);
  backend().attentionForward(out, att, q.data, k.data, v.data, d);
  return record("attention", [q, k, v], new Tensor(out, q.shape), opts, { att });
}

/**
 * Cross-entropy of logits [..., V] against integer targets (one per row; negative = ignored).
 * "mean" averages over the rows that are not ignored; "sum" adds them up.
 */
export function crossEntropy(
  logits: Tensor,
  targets: Int32Array,
  reduction: "mean" | "sum" = "mean",
): Tensor {
  floatOnly("crossEntropy", logits);
  const V = last(logits);
  const N = logits.size / V;
  check(
    targets.length === N,
    () => `crossEntropy: ${targets.length} targets for ${N} rows of logits ${shapeStr(logits.shape)}`,
  );
  const count = countTargets("crossEntropy", targets, V, reduction);
  const losses = new Float32Array(N);
  const lse = new Float32Array(N);
  backend().crossEntropyForward(losses, lse, logits.data, targets, N, V);
  let total = 0;
  for (let n = 0; n < N; n++) total += losses[n]!;
  const value = reduction === "mean" ? total / count : total;
  return record(
    "crossEntropy",
    [logits],
    new Tensor(new Float32Array([value]), []),
    { targets, reduction },
    { lse, count },
  );
}

/** Inverted dropout: zeroes each value with probability p and scales the rest by 1/(1-p). */
export function dropout(x: Tensor, p: number, rng: Rng): Tensor {
  floatOnly("dropout", x);
  check(p >= 0 && p < 1, () => `dropout: p must be in [0, 1), got ${p}`);
  if (p === 0) return x;
  const mask = new Float32Array(x.size);
  const keep = 1 / (1 - p);
  for (let i = 0; i < mask.length; i++) mask[i] = rng.uniform() < p ? 0 : keep;
  const out = empty(x.shape);
  backend().binary("mul", out, x.data, mask, [x.size], [1], [1]);
  return record("dropout", [x], new Tensor(out, x.shape), { p }, { mask });
}

/** The number of targets that are not ignored (negative); checks they lie in [0, V). */
function countTargets(what: string, targets: Int32Array, V: number, reduction: "mean" | "sum"): number {
  let count = 0;
  for (const t of targets) {
    if (t >= V) throw new RangeError(`${what}: target ${t} is outside the vocabulary [0, ${V})`);
    if (t >= 0) count++;
  }
  if (reduction === "mean" && count === 0) {
    throw new Error(`${what}: every target is ignored, so the mean loss is undefined; check the loss mask`);
  }
  return count;
}

/**
 * At most this many logits exist at once in linearCrossEntropy: 32 MiB of f32, the wasm arena's block per
 * operand. Smaller chunks save memory but repeat the head's weight operand per chunk (each wasm call copies
 * it into the arena): 8 Mi logits split GPT-2's 255 × 50257 in two.
 */
export const LINEAR_CE_CHUNK = 1 << 23;

/**
 * crossEntropy(matmul(x, weight, { transB: true }), targets, reduction) without ever holding the [N, V]
 * logits: x: [N, C], weight: [V, C] (a bias-free Linear such as the lm head). Rows run in chunks of at
 * most `chunk` logits. When the tape records it, each chunk's gradients (dL/dx, and dL/dweight
 * if the weight requires grad) are computed right away for dL/dloss = 1 and kept, so no logits outlive
 * their chunk and backward only scales them: the gradients are linear in dL/dloss. With `softcap`, the
 * logits are soft-capped first, cap · tanh(z / cap) (Gemma's final_logit_softcapping), and each chunk's
 * logit gradient passes back through the cap.
 */
export function linearCrossEntropy(
  x: Tensor,
  weight: Tensor,
  targets: Int32Array,
  reduction: "mean" | "sum" = "mean",
  opts: { chunk?: number; softcap?: number } = {},
): Tensor {
  const { chunk = LINEAR_CE_CHUNK, softcap: cap = 0 } = opts;
  check(
    !cap || (cap > 0 && Number.isFinite(cap)),
    () => `linearCrossEntropy: the soft cap must be a positive number, got ${cap}`,
  );
  check(
    x.ndim === 2 && weight.ndim === 2 && x.shape[1] === weight.shape[1],
    () =>
      `linearCrossEntropy: need x [N, C] and weight [V, C], got ${shapeStr(x.shape)}, ${shapeStr(weight.shape)}`,
  );
  const [N, C] = x.shape as [number, number];
  const V = weight.shape[0]!;
  check(targets.length === N, () => `linearCrossEntropy: ${targets.length} targets for ${N} rows`);
  const count = countTargets("linearCrossEntropy", targets, V, reduction);
  const k = backend();
  const tape = needsTape([x, weight]);
  const chunks = Math.max(1, Math.ceil(N / Math.max(1, Math.floor(chunk / V))));
  const rows = Math.ceil(N / chunks); // even chunks of at most `chunk` logits (one row at least)
  const logits = new Float32Array(rows * V);
  const dlogits = tape ? new Float32Array(rows * V) : null;
  const dx = tape && x.requiresGrad ? new Float32Array(N * C) : null;
  const dw = tape && weight.requiresGrad ? new Float32Array(V * C) : null;
  const losses = new Float32Array(N);
  const lse = new Float32Array(N);
  for (let r0 = 0; r0 < N; r0 += rows) {
    const n = Math.min(rows, N - r0);
    const [xs, ts, ls, z] = [
      x.data.subarray(r0 * C, (r0 + n) * C),
      targets.subarray(r0, r0 + n),
      lse.subarray(r0, r0 + n),
      logits.subarray(0, n * V),
    ];
    k.matmul(z, xs, weight.weights(), singleMatmul(n, V, C, { transB: true })); // [n, V]; the weight may be 16-bit
    if (cap) k.softcapForward(z, z, cap);
    k.crossEntropyForward(losses.subarray(r0, r0 + n), ls, z, ts, n, V);
    if (!dlogits) continue;
    const dz = dlogits.subarray(0, n * V);
    k.crossEntropyBackward(dz, z, ls, ts, n, V, reduction === "mean" ? 1 / count : 1);
    if (cap) k.softcapBackward(dz, dz, z, cap); // z holds the capped logits, which the cap's gradient reads
    if (dx) k.matmul(dx.subarray(r0 * C, (r0 + n) * C), dz, weight.weights(), singleMatmul(n, C, V));
    if (dw) k.matmul(dw, dz, xs, singleMatmul(V, C, n, { transA: true, accumulate: true })); // dW[V, C] += dzᵀ @ x
  }
  let total = 0;
  for (let i = 0; i < N; i++) total += losses[i]!;
  const value = reduction === "mean" ? total / count : total;
  return record(
    "linearCrossEntropy",
    [x, weight],
    new Tensor(new Float32Array([value]), []),
    { reduction, ...(cap && { softcap: cap }) },
    { dx, dw },
  );
}
