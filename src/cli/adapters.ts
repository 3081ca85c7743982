/**
 * Several `--adapter PATH[:WEIGHT]` flags (`lora generate`, `lora eval`, `lora merge`): the specs, and
 * the adapters stacked on one model (each added by name to the model's AdapterSet, all active, their
 * deltas times their weights added).
 */
import fs from "node:fs";
import { readAdapter } from "../io/node/adapter-folder.js";
import { addAdapter } from "../io/peft.js";
import { setAdapter } from "../lora/adapter-set.js";
import type { Module } from "../nn/module.js";
import { type Flag, UsageError, type Values } from "./command.js";

/** --adapter of `lora generate` and `lora eval`: repeatable, each with an optional weight. */
export const ADAPTER_FLAG: Flag = {
  type: "string",
  valueName: "PATH[:W]",
  multiple: true,
  description:
    "adapter to apply: a PEFT or mlx-lm folder, or a GGUF LoRA file (the format is detected); several stack (their updates add), and PATH:W scales one's update by W",
};

/** One --adapter: the path, and the weight of a trailing `:<number>` (null when none was given). */
export interface AdapterSpec {
  path: string;
  weight: number | null;
}

const NUMBER = /^[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|inf(?:inity)?|nan)$/i;

/**
 * `PATH` or `PATH:WEIGHT`. Only a trailing `:<number>` is a weight (a path may hold ':' elsewhere); a
 * path that exists as written, with its ':<number>', is taken whole. A weight must be a finite number.
 */
export function parseAdapterSpec(spec: string): AdapterSpec {
  const at = spec.lastIndexOf(":");
  const tail = at > 0 ? spec.slice(at + 1) : "";
  if (!NUMBER.test(tail) || (fs.existsSync(spec) && !fs.existsSync(spec.slice(0, at))))
    return { path: spec, weight: null };
  const weight = Number(/^[-+]?inf/i.test(tail) ? tail.replace(/inf(inity)?/i, "Infinity") : tail);
  if (!Number.isFinite(weight))
    throw new UsageError(
      `--adapter ${spec}: the weight "${tail}" is not a finite number; give PATH or PATH:WEIGHT, e.g. ${spec.slice(0, at)}:0.5`,
    );
  return { path: spec.slice(0, at), weight };
}

/** The --adapter flags, in order (none: []). */
export function adapterSpecs(v: Values): AdapterSpec[] {
  const raw = v.adapter;
  const list = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
  return list.filter((x): x is string => typeof x === "string").map(parseAdapterSpec);
}

/** How a spec is shown: its path, and its weight when one was given. */
export const showSpec = (s: AdapterSpec) => (s.weight === null ? s.path : `${s.path} ×${s.weight}`);

/**
 * Adds each adapter to the model under its position ("1", "2", ...) and makes them all active with their
 * weights (1 when none is given); says on stderr what each is. Returns the module paths they adapt.
 */
export function stackAdapters(
  model: Module & { headName?: string; numLayers?: number; adapterScope?: string },
  specs: readonly AdapterSpec[],
  defaultTargets: string[],
  modelConfig?: Record<string, unknown>,
): string[] {
  const paths = new Set<string>();
  specs.forEach((s, i) => {
    const read = readAdapter(s.path, { defaultTargets, numBlocks: model.numLayers, modelConfig });
    console.error(`adapter ${i + 1}: ${read.description}${s.weight === null ? "" : `, weight ${s.weight}`}`);
    const input = { config: read.config, tensors: read.tensors, source: read.weights };
    for (const p of addAdapter(model, String(i + 1), input)) paths.add(p);
  });
  setAdapter(
    model,
    specs.map((s, i) => ({ name: String(i + 1), weight: s.weight ?? 1 })),
  );
  return [...paths];
}
