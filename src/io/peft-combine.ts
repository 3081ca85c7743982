/**
 * PEFT adapters combined into a new PEFT adapter (lora/combine.ts on their tensors): the checks that
 * need their configs (the base model they name, use_dora), the new config (rank r, lora_alpha r, no
 * rsLoRA or patterns: scale 1, as lora/combine.ts writes every result; targets the union of theirs),
 * and its tensors under PEFT's names.
 */
import {
  type AdapterToCombine,
  type CombinedModule,
  type CombineOptions,
  combineModules,
  combineProblems,
} from "../lora/combine.js";
import type { LoraConfig } from "../lora/config.js";
import { isMutatingInit } from "../lora/init.js";
import { type AdapterInput, adapterModules } from "./peft.js";
import { adapterExtras } from "./peft-extras.js";
import type { SerializableTensor } from "./safetensors.js";

/** An adapter to combine: read as PEFT's config and tensors, with its name, weight and base model. */
export interface PeftToCombine extends AdapterInput {
  name: string;
  weight: number;
  /** base_model_name_or_path, or null when it names none. */
  baseModel: string | null;
}

export interface CombinedAdapter {
  config: LoraConfig;
  tensors: SerializableTensor[];
  /** The base model the inputs name (null when none does). */
  baseModel: string | null;
  modules: CombinedModule[];
}

/** Combines PEFT adapters; throws once, listing every problem, each naming the adapter and the value. */
export function combinePeftAdapters(adapters: readonly PeftToCombine[], o: CombineOptions): CombinedAdapter {
  const problems: string[] = [];
  for (const a of adapters)
    if (a.config.use_dora)
      problems.push(
        `adapter "${a.name}" (${a.source}) is a DoRA adapter (use_dora: true): its magnitude vector has no place in a combined LoRA; merge it into the model instead (lora merge --model M --adapter ${a.name} --out DIR)`,
      );
  for (const a of adapters) {
    if (isMutatingInit(a.config.init_lora_weights))
      problems.push(
        `adapter "${a.name}" (${a.source}) has init_lora_weights ${JSON.stringify(a.config.init_lora_weights)}: its update is relative to its own residual base; convert it to a plain LoRA first (lora train --resume RUN --convert-to-lora)`,
      );
    const extras = adapterExtras(a.config, a.tensors.keys());
    if (extras.length > 0)
      problems.push(
        `adapter "${a.name}" (${a.source}) holds ${extras.join(", ")}, which combining does not carry over; combine LoRA-on-Linear adapters only, or fold it into the model (lora merge --model M --adapter ${a.name} --out DIR)`,
      );
  }
  const named = adapters.filter((a) => a.baseModel !== null);
  const bases = [...new Set(named.map((a) => a.baseModel))];
  if (bases.length > 1)
    problems.push(
      `the adapters are for different base models: ${named.map((a) => `"${a.name}" names base_model_name_or_path ${JSON.stringify(a.baseModel)}`).join(", ")}`,
    );
  const inputs: AdapterToCombine[] = [];
  for (const a of adapters) {
    try {
      inputs.push({ name: a.name, weight: a.weight, modules: adapterModules(a.config, a.tensors, a.source) });
    } catch (e) {
      problems.push(`adapter "${a.name}": ${(e as Error).message}`);
    }
  }
  if (inputs.length === adapters.length) problems.push(...combineProblems(inputs, o));
  if (problems.length > 0)
    throw new Error(
      `cannot combine the adapters (${problems.length} problem${problems.length > 1 ? "s" : ""}):\n${problems.map((x) => `  - ${x}`).join("\n")}`,
    );
  const modules = combineModules(inputs, o);
  const r = modules[0]!.r;
  const first = adapters[0]!.config;
  const config: LoraConfig = {
    ...first,
    r,
    lora_alpha: r,
    use_rslora: false,
    rank_pattern: {},
    alpha_pattern: {},
    ...unionTargets(
      adapters.map((a) => a.config),
      modules.map((m) => m.path),
    ),
  };
  const tensors = modules.flatMap((m): SerializableTensor[] => [
    { name: `base_model.model.${m.path}.lora_A.weight`, dtype: "F32", shape: [m.r, m.in], data: m.A },
    { name: `base_model.model.${m.path}.lora_B.weight`, dtype: "F32", shape: [m.out, m.r], data: m.B },
  ]);
  return { config, tensors, baseModel: (bases[0] as string | undefined) ?? null, modules };
}

/**
 * The combined target_modules, as PEFT unions them: name lists by set union, regex strings joined as
 * "(a)|(b)". Where that would not select exactly the combined modules (a mix of lists and strings,
 * "all-linear", differing layers_to_transform or exclude_modules), the modules' own paths.
 */
function unionTargets(
  configs: readonly LoraConfig[],
  paths: string[],
): Pick<LoraConfig, "target_modules" | "layers_to_transform" | "exclude_modules"> {
  const same = (f: (c: LoraConfig) => unknown) =>
    new Set(configs.map((c) => JSON.stringify(f(c) ?? null))).size === 1;
  const targets = configs.map((c) => c.target_modules);
  const scoped = {
    layers_to_transform: configs[0]!.layers_to_transform,
    exclude_modules: configs[0]!.exclude_modules,
  };
  if (same((c) => c.layers_to_transform) && same((c) => c.exclude_modules)) {
    if (targets.every((t) => Array.isArray(t)))
      return { target_modules: [...new Set(targets.flat())].sort(), ...scoped };
    if (targets.every((t) => typeof t === "string" && t !== "all-linear"))
      return {
        target_modules: targets.length === 1 ? targets[0]! : targets.map((t) => `(${t})`).join("|"),
        ...scoped,
      };
  }
  return { target_modules: paths, layers_to_transform: null, exclude_modules: null };
}
