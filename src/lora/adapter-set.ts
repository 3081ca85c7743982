/**
 * Named adapters on one base model, as PEFT's load_adapter / set_adapter / delete_adapter /
 * disable_adapter: `add`, `set`, `delete`, `disable`. Each targeted Linear is wrapped once in a
 * MultiLoRALinear that holds every adapter's A and B for it; the base weights are shared. Setting the
 * active adapter writes one field per wrapped layer, so requests can switch adapters between decode
 * steps. A layer the active adapter does not target runs as the base layer.
 */
import { Linear } from "../nn/layers.js";
import { type Module, setSubmodule } from "../nn/module.js";
import { LoRALinear } from "./layer.js";
import { type LoraWeights, MultiLoRALinear } from "./multi-layer.js";

/** One adapter's weights for the layer at `path` (a module path like "model.layers.0.self_attn.q_proj"). */
export interface LayerAdapter extends LoraWeights {
  path: string;
}

export class AdapterSet {
  private readonly layers = new Map<string, MultiLoRALinear>();
  private readonly adapters = new Map<string, string[]>(); // name -> the paths it targets
  private current: string | null = null;

  /** Takes over `model` (its LoRA-free Linear layers are wrapped as adapters arrive). */
  constructor(readonly model: Module) {
    if (model.namedModules().some(([, m]) => m instanceof LoRALinear))
      throw new Error(
        "the model already has single-adapter LoRA layers; load a fresh base model to serve named adapters",
      );
    for (const [path, m] of model.namedModules()) if (m instanceof MultiLoRALinear) this.layers.set(path, m);
    model.freeze();
    model.eval();
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

  /** The active adapter, or null when the base model runs alone. */
  get active(): string | null {
    return this.current;
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

  /** Makes `name` the active adapter, or none with null (PEFT's set_adapter / disable_adapter). */
  set(name: string | null): void {
    if (name === this.current) return;
    if (name !== null && !this.adapters.has(name))
      throw new Error(`no adapter named "${name}"; loaded: ${this.names().join(", ") || "none"}`);
    for (const layer of this.layers.values()) layer.active = name;
    this.current = name;
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
    if (this.current === name) this.set(null);
  }
}
