/**
 * Named adapters on one base model, as PEFT's load_adapter / set_adapter / delete_adapter /
 * disable_adapter: `add`, `set`, `delete`, `disable`. Each targeted Linear is wrapped once in a
 * MultiLoRALinear that holds every adapter's A and B for it; the base weights are shared. Setting the
 * active adapters writes one field per wrapped layer, so requests can switch adapters between decode
 * steps. Several adapters can be active at once, each with a weight: their deltas add. A layer no
 * active adapter targets runs as the base layer.
 *
 * The model-level functions (`adapterSetOf`, `setAdapter`, `disableAdapters`, `deleteAdapter`; io/peft.ts
 * `addAdapter(model, ...)`) reach a model's one AdapterSet, made on first use.
 */
import { Linear } from "../nn/layers.js";
import { type Module, setSubmodule } from "../nn/module.js";
import { LoRALinear } from "./layer.js";
import {
  type ActiveAdapter,
  type LoraWeights,
  MultiLoRALinear,
  type RowPlan,
  rowGroups,
} from "./multi-layer.js";

/** What `set` takes: one name, none (null), or several names, each with an optional weight (default 1). */
export type AdapterChoice = string | null | readonly (string | ActiveAdapter)[];

/** Each model's AdapterSet (one per model: its layers hold one set's adapters). */
const sets = new WeakMap<Module, AdapterSet>();
/** Batched-step plans an AdapterSet keeps (each layer keeps its packed groups for each). */
const PLANS = 32;

/** One adapter's weights for the layer at `path` (a module path like "model.layers.0.self_attn.q_proj"). */
export interface LayerAdapter extends LoraWeights {
  path: string;
}

export class AdapterSet {
  private readonly layers = new Map<string, MultiLoRALinear>();
  /**
   * Recent batched steps' plans by their rows (a steady batch, or one that returns to an earlier mix,
   * finds its plan, and each layer its groups packed for it): at most PLANS, the oldest dropped first.
   */
  private readonly plans = new Map<string, RowPlan>();
  /** The plan of the last setRows with rows (one of `plans`): checked first, without making a key. */
  private lastPlan: RowPlan | null = null;
  private readonly adapters = new Map<string, string[]>(); // name -> the paths it targets
  private current: readonly ActiveAdapter[] = [];

  /** Takes over `model` (its LoRA-free Linear layers are wrapped as adapters arrive). */
  constructor(readonly model: Module) {
    if (model.namedModules().some(([, m]) => m instanceof LoRALinear))
      throw new Error(
        "the model already has single-adapter LoRA layers; load a fresh base model to serve named adapters",
      );
    if (sets.has(model))
      throw new Error("the model already has an AdapterSet; reach it with adapterSetOf(model)");
    for (const [path, m] of model.namedModules()) if (m instanceof MultiLoRALinear) this.layers.set(path, m);
    model.freeze();
    model.eval();
    sets.set(model, this);
  }

  /** The adapters' names, in the order they were added. */
  names(): string[] {
    return [...this.adapters.keys()];
  }

  has(name: string): boolean {
    return this.adapters.has(name);
  }

  /** The module paths adapter `name` targets. */
  paths(name: string): string[] {
    return [...(this.adapters.get(name) ?? [])];
  }

  /** The active adapter (several: their names joined by "+"), or null when the base model runs alone. */
  get active(): string | null {
    return this.current.length === 0 ? null : this.current.map((a) => a.name).join("+");
  }

  /** The active adapters with their weights, in the order their deltas are added. */
  get activeAdapters(): ActiveAdapter[] {
    return this.current.map((a) => ({ ...a }));
  }

  /** Adds adapter `name` (PEFT's load_adapter). Refuses a name in use; checks every layer before changing any. */
  add(name: string, weights: readonly LayerAdapter[]): void {
    if (this.adapters.has(name))
      throw new Error(`an adapter named "${name}" is already loaded; delete it first or pick another name`);
    if (weights.length === 0) throw new Error(`adapter "${name}" has no LoRA weights`);
    const modules = new Map(this.model.namedModules());
    const targets = weights.map((w) => {
      const m = this.layers.get(w.path) ?? modules.get(w.path);
      if (!(m instanceof Linear || m instanceof MultiLoRALinear))
        throw new Error(`adapter "${name}": "${w.path}" is not a linear layer of this model`);
      return m;
    });
    // check shapes on a scratch wrapper first, so a bad layer leaves the model as it was
    targets.forEach((m, i) =>
      new MultiLoRALinear(m instanceof Linear ? m : m.base_layer).add(name, weights[i]!),
    );
    targets.forEach((m, i) => {
      const w = weights[i]!;
      let layer = m instanceof MultiLoRALinear ? m : undefined;
      if (!layer) {
        layer = new MultiLoRALinear(m as Linear);
        layer.active = this.current;
        setSubmodule(this.model, w.path, layer);
        this.layers.set(w.path, layer);
      }
      layer.add(name, w);
    });
    this.adapters.set(
      name,
      weights.map((w) => w.path),
    );
  }

  /**
   * Makes `choice` the active adapters (PEFT's set_adapter): one name, several (their deltas add, each
   * times its weight), or none with null or []. Checks every name and weight before changing anything.
   */
  set(choice: AdapterChoice): void {
    const list = choice === null ? [] : typeof choice === "string" ? [choice] : choice;
    const next = list.map((c) => (typeof c === "string" ? { name: c, weight: 1 } : { ...c }));
    const seen = new Set<string>();
    for (const { name, weight } of next) {
      if (!this.adapters.has(name))
        throw new Error(`no adapter named "${name}"; loaded: ${this.names().join(", ") || "none"}`);
      if (seen.has(name)) throw new Error(`adapter "${name}" is listed twice; give it once, with one weight`);
      seen.add(name);
      if (!(typeof weight === "number" && Number.isFinite(weight)))
        throw new Error(`adapter "${name}": weight ${weight} is not a finite number`);
    }
    const frozen = Object.freeze(next);
    for (const layer of this.layers.values()) layer.active = frozen;
    this.current = frozen;
  }

  /**
   * A batched decode's adapter per row (null: the base), or null to go back to `set`'s active
   * adapters. Each wrapped layer then adds every row's own adapter term (MultiLoRALinear.rows).
   */
  setRows(rows: readonly (string | null)[] | null): void {
    for (const name of rows ?? [])
      if (name !== null && !this.adapters.has(name))
        throw new Error(`no adapter named "${name}"; loaded: ${this.names().join(", ") || "none"}`);
    let plan: RowPlan | null = null;
    const last = this.lastPlan;
    if (rows && last && sameRows(rows, last.rows))
      plan = last; // a steady batch: most steps
    else if (rows) {
      const key = JSON.stringify(rows);
      plan = this.plans.get(key) ?? null;
      if (plan)
        this.plans.delete(key); // re-inserted below: the Map's order is the order of last use
      else plan = rowGroups(Object.freeze([...rows]));
      this.plans.set(key, plan);
      if (this.plans.size > PLANS) this.plans.delete(this.plans.keys().next().value!);
      this.lastPlan = plan;
    }
    for (const layer of this.layers.values()) layer.rowPlan = plan;
  }

  /** Runs the base model alone (PEFT's disable_adapter). */
  disable(): void {
    this.set(null);
  }

  /** Removes adapter `name` and frees its weights (PEFT's delete_adapter); the base runs if it was active. */
  delete(name: string): void {
    if (!this.adapters.has(name))
      throw new Error(`no adapter named "${name}"; loaded: ${this.names().join(", ") || "none"}`);
    for (const path of this.adapters.get(name)!) this.layers.get(path)?.delete(name);
    this.adapters.delete(name);
    // the kept plans hold each layer's weights for them: the adapter's arrays go with them
    this.plans.clear();
    this.lastPlan = null;
    this.set(this.current.filter((a) => a.name !== name));
  }
}

const sameRows = (a: readonly (string | null)[], b: readonly (string | null)[]) =>
  a.length === b.length && a.every((name, i) => name === b[i]);

/** The model's AdapterSet, made (taking the model over: frozen, eval mode) on first use. */
export function adapterSetOf(model: Module): AdapterSet {
  return sets.get(model) ?? new AdapterSet(model);
}

/** Makes `choice` the model's active adapters (PEFT's set_adapter; several: their deltas add). */
export function setAdapter(model: Module, choice: AdapterChoice): void {
  adapterSetOf(model).set(choice);
}

/** Removes adapter `name` from the model and frees its weights (PEFT's delete_adapter). */
export function deleteAdapter(model: Module, name: string): void {
  adapterSetOf(model).delete(name);
}

/**
 * Runs `fn` with the base model alone (PEFT's disable_adapter context), then restores the adapters that
 * were active, also when `fn` throws; a promise's are restored once it settles.
 */
export function disableAdapters<T>(model: Module, fn: () => T): T {
  const set = adapterSetOf(model);
  const saved = set.activeAdapters;
  set.set(null);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    set.set(saved);
    throw e;
  }
  if (result instanceof Promise) return result.finally(() => set.set(saved)) as T;
  set.set(saved);
  return result;
}
