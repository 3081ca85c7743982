/**
 * Module: a plain class whose own fields hold parameters (Tensors), submodules, and arrays of
 * submodules. Field names are the Hugging Face names, so paths read like checkpoint keys
 * ("transformer.h.0.attn.c_attn.weight").
 */
import { Tensor } from "../tensor/tensor.js";

export abstract class Module {
  /** Training mode turns dropout on. */
  training = false;

  /** Direct children: [name, Tensor | Module], in field order; arrays expand to "name.i". */
  children(): [string, Tensor | Module][] {
    const out: [string, Tensor | Module][] = [];
    for (const [key, value] of Object.entries(this)) {
      if (value instanceof Tensor || value instanceof Module) out.push([key, value]);
      else if (Array.isArray(value)) {
        value.forEach((v, i) => {
          if (v instanceof Tensor || v instanceof Module) out.push([`${key}.${i}`, v]);
        });
      }
    }
    return out;
  }

  /** Every submodule with its dotted path, this one first (as ""). */
  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [name, child] of this.children()) {
      if (child instanceof Module) out.push(...child.namedModules(prefix ? `${prefix}.${name}` : name));
    }
    return out;
  }

  /** Every parameter with its dotted path. A tensor shared by two fields (tied weights) appears once. */
  namedParameters(prefix = "", seen = new Set<Tensor>()): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [name, child] of this.children()) {
      const path = prefix ? `${prefix}.${name}` : name;
      if (child instanceof Module) out.push(...child.namedParameters(path, seen));
      else if (!seen.has(child)) {
        seen.add(child);
        out.push([path, child]);
      }
    }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  trainableParameters(): [string, Tensor][] {
    return this.namedParameters().filter(([, p]) => p.requiresGrad);
  }

  /** Stops gradients for every parameter (LoRA freezes the base model, then adds trainable A, B). */
  freeze(): this {
    for (const p of this.parameters()) p.requiresGrad = false;
    return this;
  }

  unfreeze(): this {
    for (const p of this.parameters()) p.requiresGrad = true;
    return this;
  }

  /** Sets training mode on this module and every submodule. */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }
}

/** Replaces the submodule at a dotted path ("h.0.attn.c_attn") and returns the old one. */
export function setSubmodule(root: Module, path: string, replacement: Module): Module {
  const parts = path.split(".");
  const leaf = parts.pop()!;
  let parent: unknown = root;
  for (const part of parts) parent = (parent as Record<string, unknown>)[part];
  const holder = parent as Record<string, unknown>;
  const old = holder[leaf];
  if (!(old instanceof Module)) throw new Error(`no submodule at "${path}"`);
  holder[leaf] = replacement;
  return old;
}
