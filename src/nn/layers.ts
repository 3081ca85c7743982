/**
 * Basic layers. Layouts, written down once: Linear weight is [out, in] (y = x·Wᵀ + b);
 * Embedding weight is [V, C].
 */
import { add, embedding, layerNorm, matmul, rmsNorm } from "../autograd/ops.js";
import { Rng } from "../tensor/random.js";
import { Tensor } from "../tensor/tensor.js";
import { Module } from "./module.js";

/** Anything that maps [..., in] to [..., out]: a Linear, or a LoRA wrapper around one. */
export interface LinearLike extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  forward(x: Tensor): Tensor;
}

export class Linear extends Module implements LinearLike {
  weight: Tensor; // [out, in]
  bias: Tensor | null; // [out]

  constructor(weight: Tensor, bias: Tensor | null = null) {
    super();
    if (weight.ndim !== 2) throw new Error(`Linear weight must be [out, in], got [${weight.shape}]`);
    if (bias && (bias.ndim !== 1 || bias.shape[0] !== weight.shape[0])) {
      throw new Error(`Linear bias [${bias.shape}] does not match weight [${weight.shape}]`);
    }
    this.weight = weight;
    this.bias = bias;
  }

  /** A randomly initialised layer (N(0, std²) weights, zero bias). */
  static init(
    inFeatures: number,
    outFeatures: number,
    opts: { bias?: boolean; rng?: Rng; std?: number } = {},
  ) {
    const rng = opts.rng ?? new Rng(0);
    const w = Tensor.randn([outFeatures, inFeatures], rng, opts.std ?? 0.02, true);
    return new Linear(w, opts.bias ? Tensor.zeros([outFeatures], true) : null);
  }

  get inFeatures(): number {
    return this.weight.shape[1]!;
  }

  get outFeatures(): number {
    return this.weight.shape[0]!;
  }

  // x: [..., in] -> [..., out]
  forward(x: Tensor): Tensor {
    const y = matmul(x, this.weight, { transB: true });
    return this.bias ? add(y, this.bias) : y;
  }
}

export class Embedding extends Module {
  weight: Tensor; // [V, C]

  constructor(weight: Tensor) {
    super();
    this.weight = weight;
  }

  // ids: [B, T] -> [B, T, C]
  forward(ids: Int32Array, shape: readonly number[]): Tensor {
    return embedding(this.weight, ids, shape);
  }
}

export class LayerNorm extends Module {
  weight: Tensor;
  bias: Tensor;

  constructor(
    weight: Tensor,
    bias: Tensor,
    readonly eps: number,
  ) {
    super();
    this.weight = weight;
    this.bias = bias;
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/** x̂·w, or x̂·(offset + w) where the checkpoint stores the weight as an offset (Gemma: offset 1). */
export class RMSNorm extends Module {
  weight: Tensor;

  constructor(
    weight: Tensor,
    readonly eps: number,
    readonly offset = 0,
  ) {
    super();
    this.weight = weight;
  }

  forward(x: Tensor): Tensor {
    // (a [1] tensor made here, not kept: a Tensor field would count as a parameter)
    const w = this.offset ? add(this.weight, new Tensor(Float32Array.of(this.offset), [1])) : this.weight;
    return rmsNorm(x, w, this.eps);
  }
}
