/**
 * `lora merge --adapter A:W --adapter B:W --method M --out DIR`: adapters combined into a new PEFT adapter
 * (io/peft-combine.ts: PEFT's add_weighted_adapter methods).
 */
import fs from "node:fs";
import { join } from "node:path";
import { readAdapter } from "../io/node/adapter-folder.js";
import { checkOutSeparate } from "../io/node/run-folder.js";
import { writeFileAtomic } from "../io/node/safetensors-file.js";
import { adapterConfigJson } from "../io/peft.js";
import { combinePeftAdapters, type PeftToCombine } from "../io/peft-combine.js";
import { serializeSafetensors } from "../io/safetensors.js";
import {
  COMBINE_METHODS,
  type CombineMethod,
  type CombineOptions,
  type MajoritySignMethod,
} from "../lora/combine.js";
import { checkedNumber } from "../train/settings.js";
import { type AdapterSpec, showSpec } from "./adapters.js";
import { type Flag, str, UsageError, type Values } from "./command.js";

/** The flags `lora merge` adds for --method. */
export const COMBINE_FLAGS: Record<string, Flag> = {
  method: {
    type: "string",
    valueName: "M",
    description: `combine the adapters into a new adapter at --out instead of a model (PEFT's add_weighted_adapter): ${COMBINE_METHODS.join(", ")}`,
  },
  rank: {
    type: "string",
    valueName: "K",
    description: "svd: the new adapter's rank (default: the largest input rank)",
  },
  density: {
    type: "string",
    valueName: "D",
    description: "ties, dare_linear, dare_ties, magnitude_prune: the fraction of values kept, in (0, 1]",
  },
  "majority-sign-method": {
    type: "string",
    valueName: "total|frequency",
    description: "ties, dare_ties: how each entry's sign is elected (default total)",
  },
  seed: { type: "string", valueName: "S", description: "dare_*: the seed of the random masks (default 0)" },
};

/** The adapters, read as PEFT's config and tensors, each named by its path. */
function readAll(specs: readonly AdapterSpec[], opts: Parameters<typeof readAdapter>[1]): PeftToCombine[] {
  return specs.map((s) => {
    const r = readAdapter(s.path, opts);
    return {
      name: s.path,
      weight: s.weight ?? 1,
      config: r.config,
      tensors: r.tensors,
      source: r.weights,
      baseModel: r.baseModel,
    };
  });
}

/** The --method options, checked as flags (combinePeftAdapters checks the rest). */
function combineOptions(v: Values, method: string): CombineOptions {
  if (!(COMBINE_METHODS as readonly string[]).includes(method))
    throw new UsageError(`--method must be one of ${COMBINE_METHODS.join(", ")}, got "${method}"`);
  const number = (name: string, bounds = {}) => {
    const raw = str(v, name);
    return raw === undefined ? undefined : checkedNumber(name, raw, bounds);
  };
  const sign = str(v, "majority-sign-method");
  if (sign !== undefined && sign !== "total" && sign !== "frequency")
    throw new UsageError(`--majority-sign-method must be total or frequency, got "${sign}"`);
  return {
    method: method as CombineMethod,
    rank: number("rank", { int: true, min: 1 }),
    density: number("density"),
    majoritySignMethod: sign as MajoritySignMethod | undefined,
    seed: number("seed", { int: true }),
  };
}

/** `lora merge --method M`: writes the combined adapter's two files into --out. */
export function writeCombinedAdapter(v: Values, specs: readonly AdapterSpec[], out: string): void {
  const method = str(v, "method")!;
  const o = combineOptions(v, method);
  for (const s of specs) checkOutSeparate(out, { adapter: s.path }, "lora merge");
  if (fs.existsSync(join(out, "adapter_model.safetensors")) && !v.overwrite)
    throw new UsageError(`--out ${out} already holds an adapter; pass --overwrite to replace it`);
  const c = combinePeftAdapters(readAll(specs, {}), o);
  fs.mkdirSync(out, { recursive: true });
  writeFileAtomic(join(out, "adapter_model.safetensors"), serializeSafetensors(c.tensors, { format: "pt" }));
  writeFileAtomic(
    join(out, "adapter_config.json"),
    `${JSON.stringify(adapterConfigJson(c.config, c.baseModel ?? ""), null, 2)}\n`,
  );
  const details = [
    o.rank !== undefined ? `rank ${o.rank}` : "",
    o.density !== undefined ? `density ${o.density}` : "",
    o.majoritySignMethod ? `majority sign ${o.majoritySignMethod}` : "",
    method.startsWith("dare") ? `seed ${o.seed ?? 0}` : "",
  ].filter(Boolean);
  console.log(
    `combined ${specs.length} adapter(s) (${specs.map(showSpec).join(", ")}) by ${method}${details.length ? ` (${details.join(", ")})` : ""}: r ${c.config.r}, lora_alpha ${c.config.lora_alpha}, ${c.modules.length} module(s)`,
  );
  console.log(`wrote ${out}: adapter_config.json, adapter_model.safetensors`);
}
