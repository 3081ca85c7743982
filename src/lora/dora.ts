/**
 * DoRALinear (weight-decomposed LoRA, PEFT's use_dora): a LoRALinear whose adapted weight is
 * rescaled per output row to a trained magnitude m [out] (`lora_magnitude_vector`, PEFT's name):
 *   W = m / ‖W0 + s·B·A‖ · (W0 + s·B·A),  the norm of each row over the input dimension.
 * As in PEFT (tuners/lora/dora.py, variants.py DoraLinearVariant), the norm is a constant in backward
 * (the DoRA paper, section 4.3): gradients reach m through m/‖·‖ and A, B through the s·B·A·x term only.
 * With f = m/‖·‖, computed as 1 + (m - ‖·‖)/‖·‖ (and b the base bias):
 *   no dropout (or eval):  h = f ⊙ (W0·x + s·B·A·x) + b   (PEFT: base(x) + (f - 1) ⊙ W0·x + f ⊙ s·B·A·x)
 *   dropout, training:     h = base(x) + (f - 1) ⊙ W0·x' + f ⊙ s·B·A·x',  x' = dropout(x), as PEFT
 *                          computes it (a second product with W0, for x').
 * The norm comes from dora-norm.ts without forming W0 + s·B·A; it is kept while W0, A, B and s are
 * unchanged (compared by value: r·(in + out) numbers), so generation computes it once.
 * m starts at ‖W0 + s·B·A‖ (the layer starts equal to its base, as PEFT's). merge() writes W into the
 * base weight and keeps the norm it used, so unmerge() gives W0 = W / f - s·B·A back (PEFT does the same).
 */
import { add, dropout, matmul, mul, scale } from "../autograd/ops.js";
import { noGrad } from "../autograd/tape.js";
import { Linear } from "../nn/layers.js";
import { Rng } from "../tensor/random.js";
import { Tensor } from "../tensor/tensor.js";
import { doraWeightNorm, rowSquares } from "./dora-norm.js";
import { LoRALinear, type LoRAOptions, valuesOf } from "./layer.js";

export interface DoRAOptions extends LoRAOptions {
  /** The trained magnitude [out]; by default ‖W0 + s·B·A‖ of the given A and B. */
  magnitude?: Tensor;
}

interface NormCache {
  weight: Tensor;
  s: number;
  A: Float32Array;
  B: Float32Array;
  norm: Float32Array;
}

const sameValues = (a: Float32Array, b: Float32Array) => {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return a.length === b.length;
};

export class DoRALinear extends LoRALinear {
  lora_magnitude_vector: Tensor; // [out]
  private w0Squares: { weight: Tensor; squares: Float64Array } | null = null;
  private normCache: NormCache | null = null;
  /** The norm merge() divided by, for unmerge(). */
  private mergedNorm: Float32Array | null = null;

  private constructor(layer: LoRALinear, opts: LoRAOptions, rng: Rng, magnitude: Tensor | undefined) {
    super(layer.base_layer, layer.lora_A, layer.lora_B, opts, rng);
    const out = this.outFeatures;
    if (magnitude && (magnitude.ndim !== 1 || magnitude.shape[0] !== out))
      throw new Error(
        `DoRA magnitude (lora_magnitude_vector) has shape [${magnitude.shape}], expected [${out}] (one per output row)`,
      );
    this.lora_magnitude_vector = magnitude ?? new Tensor(this.weightNorm().slice(), [out], true);
  }

  /** A DoRA layer with A and B as LoRALinear.fromBase draws them, and m = ‖W0 + s·B·A‖. */
  static override fromBase(base: Linear, opts: LoRAOptions): DoRALinear {
    const rng = opts.rng ?? new Rng(0);
    return new DoRALinear(LoRALinear.fromBase(base, { ...opts, rng }), opts, rng, undefined);
  }

  /** Wraps a base layer with given A, B and magnitude (for loading adapters); checks their shapes. */
  static override withWeights(base: Linear, A: Tensor, B: Tensor, opts: DoRAOptions): DoRALinear {
    const rng = opts.rng ?? new Rng(0);
    return new DoRALinear(LoRALinear.withWeights(base, A, B, { ...opts, rng }), opts, rng, opts.magnitude);
  }

  /** ‖W0 + s·B·A‖ per output row: [out] (no gradient; the current W0, A, B). */
  weightNorm(): Float32Array {
    const w = this.base_layer.weight;
    const s = this.scaling;
    const A = this.lora_A.data;
    const B = this.lora_B.data;
    const c = this.normCache;
    if (c && c.weight === w && c.s === s && sameValues(c.A, A) && sameValues(c.B, B)) return c.norm;
    if (this.w0Squares?.weight !== w) this.w0Squares = { weight: w, squares: rowSquares(w) };
    const norm = doraWeightNorm(w, this.w0Squares.squares, this.lora_A, this.lora_B, s);
    this.normCache = { weight: w, s, A: A.slice(), B: B.slice(), norm };
    return norm;
  }

  // x: [..., in] -> [..., out]
  override forward(x: Tensor): Tensor {
    if (this.merged) return this.base_layer.forward(x);
    const norm = this.weightNorm();
    const out = norm.length;
    const inv = new Float32Array(out);
    const neg = new Float32Array(out);
    for (let i = 0; i < out; i++) {
      inv[i] = 1 / norm[i]!;
      neg[i] = -norm[i]!;
    }
    // f - 1 = (m - ‖·‖)/‖·‖: exactly 0 where m = ‖·‖, so such a layer with B = 0 gives the base's bits
    const fMinus1 = mul(add(this.lora_magnitude_vector, new Tensor(neg, [out])), new Tensor(inv, [out]));
    const f = add(fMinus1, Tensor.full([1], 1)); // m / ‖W0 + s·B·A‖
    const W0 = this.base_layer.weight;
    const lora = (h: Tensor) =>
      matmul(scale(matmul(h, this.lora_A, { transB: true }), this.scaling), this.lora_B, { transB: true });
    if (!(this.training && this.dropout > 0)) {
      const y = mul(add(matmul(x, W0, { transB: true }), lora(x)), f);
      const bias = this.base_layer.bias;
      return bias ? add(y, bias) : y;
    }
    const h = dropout(x, this.dropout, this.rng);
    const dora = add(mul(matmul(h, W0, { transB: true }), fMinus1), mul(lora(h), f));
    return add(this.base_layer.forward(x), dora);
  }

  /** m / ‖W0 + s·B·A‖ · (W0 + s·B·A): [out, in], from the unmerged W0 and the given row norm. */
  private mergedWeight(norm: Float32Array): Float32Array {
    const w = valuesOf(this.base_layer.weight);
    const merged = this.delta();
    const m = this.lora_magnitude_vector.data;
    const inF = this.inFeatures;
    for (let i = 0; i < this.outFeatures; i++) {
      const f = m[i]! / norm[i]!;
      for (let k = i * inF; k < (i + 1) * inF; k++) merged[k] = f * (w[k]! + merged[k]!);
    }
    return merged;
  }

  /**
   * Writes m / ‖W0 + s·B·A‖ · (W0 + s·B·A) into the base weight (PEFT's merge). Refuses a second merge and
   * a non-finite result, leaving W0 untouched. On a 16-bit base the result is rounded to that dtype, as
   * LoRALinear.merge does.
   */
  override merge(): void {
    if (this.merged) throw new Error("DoRA layer is already merged; unmerge() it before merging again");
    const w = this.base_layer.weight;
    const norm = this.weightNorm().slice();
    const merged = this.mergedWeight(norm);
    const stored = w.half ? new Tensor(merged, w.shape).toHalf(w.half.dtype).toFloat32().data : merged;
    const bad = stored.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0)
      throw new Error(
        `merge refused: the merged DoRA weight has a non-finite value (${stored[bad]}${w.half ? ` in ${w.dtype}` : ""}) at index ${bad} (row ${Math.floor(bad / this.inFeatures)}: magnitude ${this.lora_magnitude_vector.data[Math.floor(bad / this.inFeatures)]}, norm ${norm[Math.floor(bad / this.inFeatures)]}); the adapter or base weight is corrupt`,
      );
    w.assign(merged);
    this.mergedNorm = norm;
    this.merged = true;
    this.invalidate();
  }

  /** W0 = W / (m / ‖·‖) - s·B·A with the norm merge() used (on a 16-bit base, to within its rounding). */
  override unmerge(): void {
    if (!this.merged || !this.mergedNorm) throw new Error("DoRA layer is not merged; nothing to unmerge");
    const w = this.base_layer.weight;
    const values = valuesOf(w).slice();
    const d = this.delta();
    const m = this.lora_magnitude_vector.data;
    const inF = this.inFeatures;
    for (let i = 0; i < this.outFeatures; i++) {
      const f = m[i]! / this.mergedNorm[i]!;
      for (let k = i * inF; k < (i + 1) * inF; k++) values[k] = values[k]! / f - d[k]!;
    }
    w.assign(values);
    this.mergedNorm = null;
    this.merged = false;
    this.invalidate();
  }

  /** A plain Linear holding the merged DoRA weight, in the base weight's dtype (this layer is unchanged). */
  override fuse(): Linear {
    const w = this.base_layer.weight;
    const bias = this.base_layer.bias;
    let weight = w.clone(false);
    if (!this.merged) {
      weight = new Tensor(
        noGrad(() => this.mergedWeight(this.weightNorm())),
        w.shape,
      );
      if (w.half) weight = weight.toHalf(w.half.dtype);
    }
    return new Linear(weight, bias ? bias.clone(false) : null);
  }

  /** W0 changed in place (merge/unmerge): its cached row norms no longer hold. */
  private invalidate(): void {
    this.w0Squares = null;
    this.normCache = null;
  }
}
