/**
 * LoRALinear wraps a frozen Linear (it does not subclass it):
 *   h = W0·x + scaling · B·A·dropout(x),  A: [r, in], B: [out, r], scaling = alpha/r (or alpha/√r).
 * A starts Gaussian or kaiming-uniform, B at zero, so the wrapped layer starts equal to the base; or
 * PiSSA / OLoRA (init.ts) take A and B from W0 and leave the residual W0 - scaling·B·A in the base layer.
 * merge() folds scaling·B·A into W0 (guarded), unmerge() takes it out, fuse() returns a plain Linear.
 * W0 may be a frozen 16-bit weight (--base-dtype); A and B are always f32.
 */
import { add, dropout, matmul, scale } from "../autograd/ops.js";
import { noGrad } from "../autograd/tape.js";
import { Linear, type LinearLike } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import { Rng } from "../tensor/random.js";
import { Tensor } from "../tensor/tensor.js";
import { checkLoraShape, loraScaling } from "./config.js";
import { isMutatingInit, type LoraInit, mutatedInit, randomA } from "./init.js";

export interface LoRAOptions {
  r: number;
  alpha: number;
  dropout?: number;
  /**
   * "gaussian": A ~ N(0, (1/r)²) (PEFT's "gaussian"); "kaiming": U(±1/√in) (PEFT's default); "pissa",
   * "pissa_niter_N", "olora": from W0, which becomes the residual (init.ts). withWeights runs a PiSSA or
   * OLoRA init too (it replaces W0 by the residual, as PEFT does when it loads such an adapter).
   */
  init?: LoraInit;
  rslora?: boolean;
  /** Draws the initial A and the dropout masks. */
  rng?: Rng;
}

export class LoRALinear extends Module implements LinearLike {
  base_layer: Linear;
  lora_A: Tensor; // [r, in]
  lora_B: Tensor; // [out, r]
  readonly r: number;
  readonly alpha: number;
  dropout: number;
  readonly rslora: boolean;
  /** A PiSSA / OLoRA layer's initial A and B (its base layer holds W0 - scaling·B0·A0); null otherwise. */
  readonly initial: { init: LoraInit; A: Float32Array; B: Float32Array } | null = null;
  protected merged = false;

  protected constructor(
    base: Linear,
    A: Tensor,
    B: Tensor,
    opts: LoRAOptions,
    protected rng: Rng,
  ) {
    super();
    this.base_layer = base;
    this.lora_A = A;
    this.lora_B = B;
    this.r = opts.r;
    this.alpha = opts.alpha;
    this.dropout = opts.dropout ?? 0;
    this.rslora = opts.rslora ?? false;
  }

  static fromBase(base: Linear, opts: LoRAOptions): LoRALinear {
    const { inFeatures: inF, outFeatures: outF } = base;
    checkLoraShape(opts.r, opts.alpha, opts.dropout ?? 0, inF, outF);
    const rng = opts.rng ?? new Rng(0);
    const init = opts.init ?? "kaiming";
    if (isMutatingInit(init)) {
      const initial = LoRALinear.mutateBase(base, opts);
      const A = new Tensor(initial.A.slice(), [opts.r, inF], true);
      const B = new Tensor(initial.B.slice(), [outF, opts.r], true);
      return Object.assign(new LoRALinear(base, A, B, opts, rng), { initial });
    }
    const A = new Tensor(randomA(init, opts.r, inF, rng), [opts.r, inF], true);
    const B = Tensor.zeros([outF, opts.r], true);
    return new LoRALinear(base, A, B, opts, rng);
  }

  /** Runs a PiSSA / OLoRA init on the base layer: W0 becomes the residual; returns the initial A and B. */
  private static mutateBase(base: Linear, opts: LoRAOptions): NonNullable<LoRALinear["initial"]> {
    const init = opts.init as "pissa" | "olora";
    const w = base.weight;
    const scaling = loraScaling(opts.r, opts.alpha, opts.rslora ?? false);
    const m = mutatedInit(init, valuesOf(w), base.outFeatures, base.inFeatures, opts.r, scaling);
    w.assign(m.residual);
    return { init, A: m.A, B: m.B };
  }

  /** Wraps a base layer with given A and B (for loading adapters); checks their shapes. */
  static withWeights(base: Linear, A: Tensor, B: Tensor, opts: LoRAOptions): LoRALinear {
    checkLoraShape(opts.r, opts.alpha, opts.dropout ?? 0, base.inFeatures, base.outFeatures, "", true);
    const want = `A [${opts.r}, ${base.inFeatures}] and B [${base.outFeatures}, ${opts.r}]`;
    if (
      A.shape[0] !== opts.r ||
      A.shape[1] !== base.inFeatures ||
      B.shape[0] !== base.outFeatures ||
      B.shape[1] !== opts.r
    ) {
      throw new Error(`LoRA weights A [${A.shape}] and B [${B.shape}] do not fit: expected ${want}`);
    }
    const initial = isMutatingInit(opts.init) ? LoRALinear.mutateBase(base, opts) : null;
    return Object.assign(new LoRALinear(base, A, B, opts, opts.rng ?? new Rng(0)), { initial });
  }

  /** Sets the dropout probability on the LoRA input and the stream its masks are drawn from. */
  setDropout(p: number, rng: Rng): void {
    checkLoraShape(this.r, this.alpha, p, this.inFeatures, this.outFeatures, "", true);
    this.dropout = p;
    this.rng = rng;
  }

  get scaling(): number {
    return loraScaling(this.r, this.alpha, this.rslora);
  }

  get inFeatures(): number {
    return this.base_layer.inFeatures;
  }

  get outFeatures(): number {
    return this.base_layer.outFeatures;
  }

  get isMerged(): boolean {
    return this.merged;
  }

  // x: [..., in] -> [..., out]
  forward(x: Tensor): Tensor {
    const y = this.base_layer.forward(x);
    if (this.merged) return y;
    const h = this.training && this.dropout > 0 ? dropout(x, this.dropout, this.rng) : x;
    const ax = scale(matmul(h, this.lora_A, { transB: true }), this.scaling); // [..., r]
    return add(y, matmul(ax, this.lora_B, { transB: true }));
  }

  /** scaling · B·A: [out, in]. */
  delta(): Float32Array {
    return noGrad(() => scale(matmul(this.lora_B, this.lora_A), this.scaling).data);
  }

  /**
   * Folds the update into W0. Refuses a second merge, and a non-finite result (W0 is left untouched).
   * On a 16-bit base (--base-dtype) the merged weight is rounded back to that dtype, as PEFT does for a
   * bf16 model: inference stays correct to the dtype's precision, but unmerge() then restores W0 only to
   * within that rounding. For an exact merge (`lora merge`), load the base in f32.
   */
  merge(): void {
    if (this.merged) throw new Error("LoRA layer is already merged; unmerge() it before merging again");
    const w = this.base_layer.weight;
    const merged = this.delta();
    const base = valuesOf(w);
    for (let i = 0; i < merged.length; i++) merged[i]! += base[i]!;
    // check what will be stored: f16 overflows to Inf above 65504
    const stored = w.half ? new Tensor(merged, w.shape).toHalf(w.half.dtype).toFloat32().data : merged;
    const bad = stored.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      throw new Error(
        `merge refused: the merged weight has a non-finite value (${stored[bad]}${w.half ? ` in ${w.dtype}` : ""}) at index ${bad}; the adapter or base weight is corrupt`,
      );
    }
    w.assign(merged);
    this.merged = true;
  }

  /** Subtracts the update from W0 again (on a 16-bit base, to within its rounding: see merge). */
  unmerge(): void {
    if (!this.merged) throw new Error("LoRA layer is not merged; nothing to unmerge");
    const w = this.base_layer.weight;
    const values = valuesOf(w).slice();
    const d = this.delta();
    for (let i = 0; i < values.length; i++) values[i]! -= d[i]!;
    w.assign(values);
    this.merged = false;
  }

  /** A plain Linear with weight W0 + scaling·B·A in the base weight's dtype (the base layer is not changed). */
  fuse(): Linear {
    const w = this.base_layer.weight;
    const bias = this.base_layer.bias;
    let weight = w.clone(false);
    if (!this.merged) {
      const fused = valuesOf(w).slice();
      this.delta().forEach((d, i) => (fused[i]! += d));
      weight = new Tensor(fused, w.shape);
      if (w.half) weight = weight.toHalf(w.half.dtype);
    }
    return new Linear(weight, bias ? bias.clone(false) : null);
  }
}

/** A weight's values as f32: the data itself, or a decoded copy of a 16-bit weight. */
export const valuesOf = (w: Tensor): Float32Array => (w.half ? w.toFloat32().data : w.data);
