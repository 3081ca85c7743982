/**
 * PEFT's modules_to_save: whole modules (a head, the norms) trained in full beside the LoRA layers and
 * saved in the adapter under their own keys (`base_model.model.lm_head.weight`, no adapter name). As in
 * PEFT's ModulesToSaveWrapper the trained module is a copy: its tensors are f32 copies that require grad,
 * so a head tied to the embedding gets a table of its own and the embedding keeps the base's.
 * PEFT matches a name by plain suffix (`key.endswith(name)`): "norm" is every norm, input_layernorm too.
 */
import type { Module } from "../nn/module.js";
import { Tensor } from "../tensor/tensor.js";

/** The trained copies, each with whether its tensors were shared with another module before (a tied head). */
const SAVED = new WeakMap<Module, { untied: boolean }>();

/** The modules `names` select (PEFT's suffix match), outermost only, by path. */
export function modulesToSaveMatches(model: Module, names: readonly string[]): [string, Module][] {
  const out: [string, Module][] = [];
  for (const [path, m] of model.namedModules()) {
    if (!path || !names.some((n) => path.endsWith(n))) continue;
    if (out.some(([p]) => path.startsWith(`${p}.`))) continue;
    out.push([path, m]);
  }
  return out;
}

/** The names that select no module (empty when every name matched something). */
export function unmatchedModulesToSave(model: Module, names: readonly string[]): string[] {
  const paths = model.namedModules().map(([p]) => p);
  return names.filter((n) => !paths.some((p) => p !== "" && p.endsWith(n)));
}

/** A module's own and nested tensors, by path relative to it, with the object and field holding each. */
function tensorFields(
  m: Module,
): { path: string; holder: Record<string, unknown>; field: string; t: Tensor }[] {
  const out: { path: string; holder: Record<string, unknown>; field: string; t: Tensor }[] = [];
  for (const [prefix, sub] of m.namedModules()) {
    for (const [field, v] of Object.entries(sub)) {
      if (v instanceof Tensor)
        out.push({ path: prefix ? `${prefix}.${field}` : field, holder: sub as never, field, t: v });
    }
  }
  return out;
}

/**
 * Makes each selected module a trainable copy (f32 tensors that require grad; `values` by relative
 * parameter path replace the copied values, for a loaded adapter). Call after the model is frozen.
 * Returns the paths.
 */
export function applyModulesToSave(
  model: Module,
  names: readonly string[],
  values: ReadonlyMap<string, Float32Array> = new Map(),
): string[] {
  const holders = new Map<Tensor, number>();
  for (const [, m] of model.namedModules())
    for (const v of Object.values(m)) if (v instanceof Tensor) holders.set(v, (holders.get(v) ?? 0) + 1);
  const matches = modulesToSaveMatches(model, names);
  for (const [path, m] of matches) {
    let untied = false;
    const copies = new Map<Tensor, Tensor>();
    for (const { path: rel, holder, field, t } of tensorFields(m)) {
      let copy = copies.get(t);
      if (!copy) {
        const given = values.get(`${path}.${rel}`);
        const data = given ? given.slice() : (t.half ? t.toFloat32().data : t.data).slice();
        copy = new Tensor(data, t.shape, true);
        copies.set(t, copy);
        if ((holders.get(t) ?? 0) > 1) untied = true;
      }
      holder[field] = copy;
    }
    SAVED.set(m, { untied });
  }
  return matches.map(([p]) => p);
}

/** The model's modules_to_save copies, by path. */
export function savedModules(model: Module): [string, Module][] {
  return model.namedModules().filter(([, m]) => SAVED.has(m));
}

/** The saved modules whose tensors were shared with another module before they were copied (a tied head). */
export function untiedSavedModules(model: Module): string[] {
  return savedModules(model)
    .filter(([, m]) => SAVED.get(m)!.untied)
    .map(([p]) => p);
}
