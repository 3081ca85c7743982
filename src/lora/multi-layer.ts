/**
 * MultiLoRALinear: one frozen base Linear with several named adapters, any of them active, each with a
 * weight w (PEFT's set_adapter with several names; the deltas add):
 *   h = W0·x + Σ_a w_a·scaling_a · B_a·A_a·x   over the active adapters a that target this layer
 *                                              (A_a: [r, in], B_a: [out, r]), added in the active order,
 *   h = W0·x                                   when none of them does.
 * The base weight is shared by all adapters; switching is a field write, nothing is reloaded or copied.
 * Each adapter term is computed with the same ops, in the same order, as LoRALinear.forward (inference:
 * no dropout), so one active adapter of weight 1 gives the same bits as a model wrapped with it alone.
 */
import { add, matmul, scale } from "../autograd/ops.js";
import { linearRows, loraRows, type PackedRowGroups, packRows, rowWeights } from "../autograd/rows.js";
import type { LoraRowWeights } from "../kernels/index.js";
import type { Linear, LinearLike } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import type { Tensor } from "../tensor/tensor.js";
import { checkLoraShape, loraScaling } from "./config.js";

/** One adapter's weights for one layer. */
export interface LoraWeights {
  A: Tensor; // [r, in]
  B: Tensor; // [out, r]
  r: number;
  alpha: number;
  rslora?: boolean;
  /** DoRA's lora_magnitude_vector [out] (a DoRALinear; MultiLoRALinear does not take one). */
  magnitude?: Tensor;
}

interface Held extends LoraWeights {
  scaling: number;
  /** A and B in the row kernels' form, made at a batched decode's first use. */
  rowWeights?: LoraRowWeights;
}

/** An active adapter and the weight its delta is multiplied by (1: as trained). */
export interface ActiveAdapter {
  name: string;
  weight: number;
}

export class MultiLoRALinear extends Module implements LinearLike {
  base_layer: Linear;
  /** Not a field Module walks (a Map): adapters' weights are not the model's parameters. */
  private readonly adapters = new Map<string, Held>();
  /** The adapters forward() adds, in order (empty: the base layer alone). */
  active: readonly ActiveAdapter[] = [];
  /**
   * A batched decode's adapter of each row (null: the base), grouped by adapter (rowGroups; computed
   * once per step by AdapterSet.setRows and shared by every layer), or null when every row uses
   * `active`. Set: forward() takes [rows, in] (any leading dims) and adds each row's own adapter term,
   * grouped by adapter (autograd/rows.ts loraRows), the same bits per row as that adapter active alone.
   */
  rowPlan: RowPlan | null = null;
  /** Counts add() and delete(): a plan's groups for this layer packed before a change are made again. */
  private version = 0;
  /** This layer's weights for each set of adapters a plan has named (RowPlan.key); add and delete empty it. */
  private rowWeightLists = new Map<
    string,
    { weights: readonly LoraRowWeights[]; present: readonly boolean[] }
  >();

  constructor(base: Linear) {
    super();
    this.base_layer = base;
  }

  get inFeatures(): number {
    return this.base_layer.inFeatures;
  }

  get outFeatures(): number {
    return this.base_layer.outFeatures;
  }

  /** Adds (or replaces) adapter `name`'s weights on this layer; checks their shapes. */
  add(name: string, w: LoraWeights): void {
    const { inFeatures: inF, outFeatures: outF } = this;
    checkLoraShape(w.r, w.alpha, 0, inF, outF, "", true);
    const [a0, a1] = w.A.shape;
    const [b0, b1] = w.B.shape;
    if (w.A.ndim !== 2 || w.B.ndim !== 2 || a0 !== w.r || a1 !== inF || b0 !== outF || b1 !== w.r)
      throw new Error(
        `adapter "${name}": LoRA weights A [${w.A.shape}] and B [${w.B.shape}] do not fit: expected A [${w.r}, ${inF}] and B [${outF}, ${w.r}]`,
      );
    this.adapters.set(name, { ...w, scaling: loraScaling(w.r, w.alpha, w.rslora ?? false) });
    this.changed();
  }

  /** Drops adapter `name` from this layer (no-op when it has none); it is no longer active here. */
  delete(name: string): void {
    this.adapters.delete(name);
    this.changed();
    this.active = this.active.filter((a) => a.name !== name);
  }

  // plans' groups packed before now are made again; the weights lists go at once (a dropped adapter's
  // arrays with them)
  private changed(): void {
    this.version++;
    this.rowWeightLists = new Map();
  }

  has(name: string): boolean {
    return this.adapters.has(name);
  }

  get size(): number {
    return this.adapters.size;
  }

  // x: [..., in] -> [..., out]
  forward(x: Tensor): Tensor {
    if (this.rowPlan) return this.forwardRows(x, this.rowPlan);
    let y = this.base_layer.forward(x);
    for (const { name, weight } of this.active) {
      const a = this.adapters.get(name);
      if (!a) continue; // this adapter does not target this layer
      const s = weight === 1 ? a.scaling : a.scaling * weight;
      const ax = scale(matmul(x, a.A, { transB: true }), s); // [..., r]
      y = add(y, matmul(ax, a.B, { transB: true }));
    }
    return y;
  }

  // one base product for every row, then each adapter's term on its rows (in one call without a bias:
  // autograd/rows.ts linearRows)
  private forwardRows(x: Tensor, plan: RowPlan): Tensor {
    const n = x.size / this.inFeatures;
    if (plan.rows.length !== n)
      throw new Error(`MultiLoRALinear: ${plan.rows.length} row adapters for an input of ${n} rows`);
    // this layer's groups of the plan, kept in the plan, which a busy server makes anew whenever a
    // sequence joins or leaves (a WeakMap per layer cost 2 us a layer there): the plan's rows (one array
    // for every layer, unless this layer lacks one of its adapters) and this layer's weights for the
    // plan's adapters, kept per set of adapters (rowWeightLists), so a backend's handles for them are
    // looked up once a call, not once a group, and not made again for every plan
    let kept = plan.packed.get(this);
    if (!kept || kept.version !== this.version) {
      let listed = this.rowWeightLists.get(plan.key);
      if (!listed) {
        if (this.rowWeightLists.size >= WEIGHT_LISTS) this.rowWeightLists.clear();
        const weights: LoraRowWeights[] = [];
        const present: boolean[] = [];
        for (const name of plan.groups.keys()) {
          const a = this.adapters.get(name);
          present.push(a !== undefined);
          if (a)
            weights.push(
              (a.rowWeights ??= rowWeights(a.A, a.B, a.scaling, this.inFeatures, this.outFeatures)),
            );
        }
        listed = { weights: Object.freeze(weights), present };
        this.rowWeightLists.set(plan.key, listed);
      }
      const { weights, present } = listed;
      const { inFeatures: inF, outFeatures: outF } = this;
      const rows =
        weights.length === plan.rowList.length
          ? plan.rowList
          : packRows(
              plan.rowList.filter((_, g) => present[g]),
              n,
            );
      kept = { version: this.version, packed: weights.length ? { inF, outF, N: n, weights, rows } : null };
      plan.packed.set(this, kept);
    }
    const { weight, bias } = this.base_layer;
    if (kept.packed && !bias) return linearRows(x, weight, kept.packed);
    const y = this.base_layer.forward(x);
    return kept.packed ? loraRows(y, x, kept.packed) : y;
  }
}

/** How many sets of adapters a layer keeps its weights for (past it, it starts again). */
const WEIGHT_LISTS = 64;

/**
 * A batched decode's rows grouped by adapter: each adapter's rows, the adapters in name order (base
 * rows in none). The order of the groups changes no row's bits (each row gets its own group's term),
 * and one order per set of adapters lets a layer keep its weights per set, under `key`.
 */
export interface RowPlan {
  rows: readonly (string | null)[];
  groups: ReadonlyMap<string, Int32Array>;
  /** The adapters' names, in order, as one string. */
  key: string;
  /** The groups' rows in their order, frozen (autograd/rows.ts packRows): every layer's, the same array. */
  rowList: readonly Int32Array[];
  /** Each layer's groups of this plan, packed for the kernels (MultiLoRALinear's own). */
  packed: Map<object, { version: number; packed: PackedRowGroups | null }>;
}

export function rowGroups(rows: readonly (string | null)[]): RowPlan {
  const lists = new Map<string, number[]>();
  rows.forEach((name, i) => {
    if (name === null) return;
    const g = lists.get(name);
    if (g) g.push(i);
    else lists.set(name, [i]);
  });
  const names = [...lists.keys()].sort();
  const rowList = packRows(
    names.map((name) => lists.get(name)!),
    rows.length,
  );
  return {
    rows,
    groups: new Map(names.map((name, i) => [name, rowList[i]!])),
    key: JSON.stringify(names),
    rowList,
    packed: new Map(),
  };
}
