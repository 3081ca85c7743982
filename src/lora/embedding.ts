/**
 * LoRAEmbedding wraps a frozen Embedding (PEFT's lora.Embedding):
 *   h = E[ids] + scaling · (Aᵀ[ids]) · Bᵀ,  A (lora_embedding_A): [r, V], B (lora_embedding_B): [C, r].
 * PEFT's initialisation for embeddings is the reverse of a Linear's: A starts at zero and B ~ N(0, 1),
 * so the wrapped layer starts equal to the base. There is no dropout on this path (PEFT applies none).
 * A head tied to the embedding keeps reading the base table E: the update does not reach it (PEFT's
 * default, ensure_weight_tying: false). merge() folds scaling · (B·A)ᵀ into E, fuse() returns a plain
 * Embedding.
 */
import { add, embedding, matmul, scale } from "../autograd/ops.js";
import { noGrad } from "../autograd/tape.js";
import { Embedding } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import { Rng } from "../tensor/random.js";
import { Tensor } from "../tensor/tensor.js";
import { checkLoraShape, loraScaling } from "./config.js";

export interface LoRAEmbeddingOptions {
  r: number;
  alpha: number;
  rslora?: boolean;
  /** Draws the initial B. */
  rng?: Rng;
}

export class LoRAEmbedding extends Module {
  base_layer: Embedding;
  lora_embedding_A: Tensor; // [r, V]
  lora_embedding_B: Tensor; // [C, r]
  readonly r: number;
  readonly alpha: number;
  readonly rslora: boolean;
  private merged = false;
  /** The r×r identity: Aᵀ = Aᵀ·I is formed by a matmul, so its gradient flows back to A exactly. */
  readonly #eye: Tensor;

  private constructor(base: Embedding, A: Tensor, B: Tensor, opts: LoRAEmbeddingOptions) {
    super();
    this.base_layer = base;
    this.lora_embedding_A = A;
    this.lora_embedding_B = B;
    this.r = opts.r;
    this.alpha = opts.alpha;
    this.rslora = opts.rslora ?? false;
    const eye = new Float32Array(opts.r * opts.r);
    for (let i = 0; i < opts.r; i++) eye[i * opts.r + i] = 1;
    this.#eye = new Tensor(eye, [opts.r, opts.r]);
  }

  /** A fresh adapter as PEFT initialises it: A = 0, B ~ N(0, 1). */
  static fromBase(base: Embedding, opts: LoRAEmbeddingOptions): LoRAEmbedding {
    const [V, C] = base.weight.shape as [number, number];
    checkLoraShape(opts.r, opts.alpha, 0, V, C);
    const rng = opts.rng ?? new Rng(0);
    const A = Tensor.zeros([opts.r, V], true);
    const B = Tensor.randn([C, opts.r], rng, 1, true);
    return new LoRAEmbedding(base, A, B, opts);
  }

  /** Wraps a base embedding with given A [r, V] and B [C, r] (for loading adapters); checks their shapes. */
  static withWeights(base: Embedding, A: Tensor, B: Tensor, opts: LoRAEmbeddingOptions): LoRAEmbedding {
    const [V, C] = base.weight.shape as [number, number];
    checkLoraShape(opts.r, opts.alpha, 0, V, C);
    if (A.shape[0] !== opts.r || A.shape[1] !== V || B.shape[0] !== C || B.shape[1] !== opts.r)
      throw new Error(
        `LoRA embedding weights A [${A.shape}] and B [${B.shape}] do not fit: expected A [${opts.r}, ${V}] and B [${C}, ${opts.r}]`,
      );
    return new LoRAEmbedding(base, A, B, opts);
  }

  get scaling(): number {
    return loraScaling(this.r, this.alpha, this.rslora);
  }

  get weight(): Tensor {
    return this.base_layer.weight;
  }

  get isMerged(): boolean {
    return this.merged;
  }

  // ids: [...shape] -> [...shape, C]
  forward(ids: Int32Array, shape: readonly number[]): Tensor {
    const y = this.base_layer.forward(ids, shape);
    if (this.merged) return y;
    const At = matmul(this.lora_embedding_A, this.#eye, { transA: true }); // [V, r]
    const after = embedding(At, ids, shape); // [..., r]
    return add(y, scale(matmul(after, this.lora_embedding_B, { transB: true }), this.scaling));
  }

  /** scaling · (B·A)ᵀ: [V, C]. */
  delta(): Float32Array {
    return noGrad(
      () =>
        scale(
          matmul(this.lora_embedding_A, this.lora_embedding_B, { transA: true, transB: true }),
          this.scaling,
        ).data,
    );
  }

  /** Folds the update into E (refuses a second merge and a non-finite result; E is then untouched). */
  merge(): void {
    if (this.merged) throw new Error("LoRA embedding is already merged; unmerge() it before merging again");
    const w = this.base_layer.weight;
    const merged = this.delta();
    const base = w.half ? w.toFloat32().data : w.data;
    for (let i = 0; i < merged.length; i++) merged[i]! += base[i]!;
    const stored = w.half ? new Tensor(merged, w.shape).toHalf(w.half.dtype).toFloat32().data : merged;
    const bad = stored.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0)
      throw new Error(
        `merge refused: the merged embedding has a non-finite value (${stored[bad]}) at index ${bad}; the adapter or base weight is corrupt`,
      );
    w.assign(merged);
    this.merged = true;
  }

  unmerge(): void {
    if (!this.merged) throw new Error("LoRA embedding is not merged; nothing to unmerge");
    const w = this.base_layer.weight;
    const values = (w.half ? w.toFloat32().data : w.data).slice();
    const d = this.delta();
    for (let i = 0; i < values.length; i++) values[i]! -= d[i]!;
    w.assign(values);
    this.merged = false;
  }

  /** A plain Embedding with table E + scaling·(B·A)ᵀ in E's dtype (the base layer is not changed). */
  fuse(): Embedding {
    const w = this.base_layer.weight;
    if (this.merged) return new Embedding(w.clone(false));
    const fused = (w.half ? w.toFloat32().data : w.data).slice();
    this.delta().forEach((d, i) => (fused[i]! += d));
    const t = new Tensor(fused, w.shape);
    return new Embedding(w.half ? t.toHalf(w.half.dtype) : t);
  }
}

/** Every LoRA embedding in the model, with its path. */
export function loraEmbeddings(model: Module): [string, LoRAEmbedding][] {
  return model.namedModules().filter((e): e is [string, LoRAEmbedding] => e[1] instanceof LoRAEmbedding);
}
