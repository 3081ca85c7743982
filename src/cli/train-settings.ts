/**
 * `lora train`'s flags: the settings table of `train/settings.ts` as flags, plus the flags that are not
 * settings (--resume, --config, --overwrite), and what only the command line needs (config files,
 * paths resolved against the working directory).
 */
import { resolve } from "node:path";
import { readJson } from "../io/node/json-file.js";
import { SETTINGS, type SettingName, type Settings, type Spec } from "../train/settings.js";
import { type Flag, UsageError, type Values } from "./command.js";

/** Flags of `lora train` that are not settings. */
export const RUN_FLAGS: Record<string, Flag> = {
  resume: {
    type: "string",
    valueName: "DIR",
    description: "continue a checkpoint (a step-N folder, or a run folder: its newest)",
  },
  config: { type: "string", valueName: "FILE", description: "JSON file of settings (flags override it)" },
  overwrite: { type: "boolean", description: "replace a run already in --out" },
};

export const TRAIN_FLAGS: Record<string, Flag> = {
  ...Object.fromEntries(
    Object.entries(SETTINGS as Record<string, Spec>).map(([name, s]) => [
      name,
      {
        type: s.kind === "boolean" ? "boolean" : "string",
        valueName: s.valueName,
        description: `${s.description}${s.def !== undefined && s.kind !== "boolean" ? ` (default ${s.def})` : ""}${s.choices ? `: ${s.choices.join(", ")}` : ""}`,
      } satisfies Flag,
    ]),
  ),
  ...RUN_FLAGS,
};

/** A --config JSON file as flag-style values; keys may be kebab-case or snake_case flag names. */
export function readConfigFile(path: string): Values {
  const json = readJson(path)!;
  const v: Values = {};
  const known = Object.keys(SETTINGS);
  for (const [key, value] of Object.entries(json)) {
    const name = key.replaceAll("_", "-");
    const spec = (SETTINGS as Record<string, Spec>)[name];
    if (!spec) throw new UsageError(`${path}: unknown setting "${key}"; settings: ${known.join(", ")}`);
    if (spec.kind === "boolean") {
      if (typeof value !== "boolean") throw new UsageError(`${path}: "${key}" must be true or false`);
      v[name] = value;
    } else if (Array.isArray(value)) v[name] = value.join(",");
    else if (typeof value === "string" || typeof value === "number") v[name] = String(value);
    else throw new UsageError(`${path}: "${key}" must be a ${spec.kind}, got ${JSON.stringify(value)}`);
  }
  return v;
}

const specs = Object.entries(SETTINGS as Record<string, Spec>) as [SettingName, Spec][];

/** The path settings made absolute against `base` (a stored run then resumes from any directory). */
export function resolvePaths(s: Settings, base: string): Settings {
  const out = { ...s };
  for (const [k, spec] of specs)
    if (spec.path && typeof out[k] === "string") out[k] = resolve(base, out[k] as string);
  return out;
}
