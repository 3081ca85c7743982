/**
 * `lora scale-out`: the same run as `lora train`, written as a folder that Hugging Face accelerate +
 * TRL + PEFT run (train.py, accelerate_config.yaml, requirements.txt, README.md, the converted data).
 * The flags and --config file go through the one settings table, as `lora train` reads them; what the
 * engine cannot express identically is printed and listed in the README.
 */
import fs from "node:fs";
import { join, resolve } from "node:path";
import { accelerateConfigYaml } from "../scale-out/accelerate-config.js";
import { dataFormat, trlJsonl } from "../scale-out/data.js";
import { differences } from "../scale-out/differences.js";
import {
  DEVICES,
  type Device,
  type EngineOptions,
  enginePlan,
  MIXED_PRECISIONS,
  type MixedPrecision,
  STRATEGIES,
  type Strategy,
} from "../scale-out/mapping.js";
import { LAUNCH, readme } from "../scale-out/readme.js";
import { requirementsTxt } from "../scale-out/requirements.js";
import { settingsTable } from "../scale-out/settings-table.js";
import { trainPy } from "../scale-out/train-py.js";
import { checkSettings } from "../train/job.js";
import { type Settings, settingsFrom } from "../train/settings.js";
import { type Command, type Flag, num, str, UsageError, type Values } from "./command.js";
import { readRows } from "./load.js";
import { readConfigFile, TRAIN_FLAGS } from "./train-settings.js";

const { resume: _resume, ...SETTING_FLAGS } = TRAIN_FLAGS;

const ENGINE_FLAGS: Record<string, Flag> = {
  engine: {
    type: "string",
    valueName: "NAME",
    description: "the engine to write the run for: accelerate (default)",
  },
  strategy: {
    type: "string",
    valueName: "KIND",
    description: `how accelerate spreads the run: ${STRATEGIES.join(", ")} (default ddp)`,
  },
  "num-processes": {
    type: "string",
    valueName: "N",
    description: "processes (GPUs, or CPU processes) (default 1)",
  },
  "mixed-precision": {
    type: "string",
    valueName: "KIND",
    description: `autocast: ${MIXED_PRECISIONS.join(", ")} (default no: f32, as lora train)`,
  },
  device: { type: "string", valueName: "KIND", description: `${DEVICES.join(" or ")} (default gpu)` },
  "print-settings": {
    type: "boolean",
    description: "print how every setting maps to TRL / PEFT / accelerate, and exit",
  },
};

function choice<T extends string>(v: Values, name: string, choices: readonly T[], def: T): T {
  const x = str(v, name) ?? def;
  if (!choices.includes(x as T))
    throw new UsageError(`--${name} must be one of ${choices.join(", ")}, got "${x}"`);
  return x as T;
}

function engineOptions(v: Values): EngineOptions {
  const engine = str(v, "engine") ?? "accelerate";
  if (engine !== "accelerate")
    throw new UsageError(`--engine must be accelerate (Hugging Face accelerate + TRL), got "${engine}"`);
  const o: EngineOptions = {
    strategy: choice<Strategy>(v, "strategy", STRATEGIES, "ddp"),
    numProcesses: num(v, "num-processes", 1, { int: true, min: 1 }),
    mixedPrecision: choice<MixedPrecision>(v, "mixed-precision", MIXED_PRECISIONS, "no"),
    device: choice<Device>(v, "device", DEVICES, "gpu"),
  };
  if (o.device === "cpu" && o.strategy.startsWith("deepspeed"))
    throw new UsageError(
      `--strategy ${o.strategy} needs GPUs; use --strategy ddp (or fsdp) with --device cpu`,
    );
  return o;
}

/** A model folder made absolute; anything else must look like a Hub id (owner/name). */
function modelRef(model: string): string {
  if (fs.existsSync(model)) return resolve(model);
  if (/^[\w.-]+\/[\w.-]+$/.test(model)) return model;
  throw new UsageError(`--model ${model}: no such folder, and not a Hugging Face Hub id (owner/name)`);
}

/** Copies a PEFT adapter folder to start from, with the run's --dropout (lora train keeps the adapter's other settings). */
function copyInitAdapter(src: string, dest: string, dropout: number): void {
  const config = join(src, "adapter_config.json");
  const weights = join(src, "adapter_model.safetensors");
  if (!fs.existsSync(config) || !fs.existsSync(weights))
    throw new UsageError(
      `--adapter ${src}: lora scale-out starts from a PEFT folder (adapter_config.json + adapter_model.safetensors); an mlx-lm or GGUF adapter is not mapped`,
    );
  fs.mkdirSync(dest, { recursive: true });
  const json = JSON.parse(fs.readFileSync(config, "utf8")) as Record<string, unknown>;
  fs.writeFileSync(
    join(dest, "adapter_config.json"),
    `${JSON.stringify({ ...json, lora_dropout: dropout }, null, 2)}\n`,
  );
  fs.copyFileSync(weights, join(dest, "adapter_model.safetensors"));
}

function validPath(s: Settings): string | null {
  if (s["val-data"]) return s["val-data"] as string;
  const data = s.data as string;
  return fs.statSync(data).isDirectory() && fs.existsSync(join(data, "valid.jsonl")) ? data : null;
}

function flagsLine(v: Values): string {
  const parts = Object.entries(v)
    .filter(([k, x]) => x !== undefined && x !== false && k !== "_")
    .map(([k, x]) => (x === true ? `--${k}` : `--${k} ${String(x)}`));
  return `lora scale-out ${parts.join(" ")}`;
}

/** What lora scale-out writes into --out, and what the run it writes adds there: all --overwrite may remove. */
const OWN_FILES = new Set([
  "data",
  "init-adapter",
  "train.py",
  "accelerate_config.yaml",
  "requirements.txt",
  "README.md",
  "adapter",
  "checkpoints",
  "metrics.jsonl",
  "world.json",
]);

/** --overwrite: removes what scale-out and its run wrote; refuses, removing nothing, if --out holds anything else. */
function removeOwnFiles(out: string): void {
  if (!fs.existsSync(out)) return;
  const others = fs.readdirSync(out).filter((f) => !OWN_FILES.has(f));
  if (others.length > 0)
    throw new UsageError(
      `--out ${out} holds files lora scale-out did not write (${others.slice(0, 5).join(", ")}${others.length > 5 ? ", ..." : ""}); --overwrite replaces only its own files: move those away or pick a new --out`,
    );
  for (const f of fs.readdirSync(out)) fs.rmSync(join(out, f), { recursive: true, force: true });
}

export const scaleOutCommand: Command = {
  name: "scale-out",
  summary:
    "Write a `lora train` run as a folder for Hugging Face accelerate + TRL + PEFT (DDP, FSDP or DeepSpeed, on GPUs or CPU processes); the PEFT adapter it writes comes back to lora eval/generate/merge/export.",
  usage:
    "lora scale-out --model DIR|HUB_ID --data PATH --out DIR [train flags | --config FILE] [--strategy ddp|fsdp|deepspeed-zero2|deepspeed-zero3] [--num-processes N] [--mixed-precision no|bf16|fp16] [--device cpu|gpu] | --print-settings",
  flags: { ...SETTING_FLAGS, ...ENGINE_FLAGS },
  examples: [
    "lora scale-out --model ./my-model --data ./data --out ./run-hf --num-processes 8 --mixed-precision bf16",
    "lora scale-out --config run.json --out ./run-cpu --device cpu --num-processes 2",
    "lora scale-out --print-settings",
  ],
  run(v: Values) {
    if (v["print-settings"]) {
      console.log(settingsTable());
      return;
    }
    const o = engineOptions(v);
    const given = { ...(typeof v.config === "string" ? readConfigFile(v.config) : {}), ...v };
    const s = settingsFrom(given);
    checkSettings(s);
    for (const name of ["model", "data", "out"] as const)
      if (s[name] === null)
        throw new UsageError(`missing --${name} for 'lora scale-out'; see 'lora scale-out --help'`);
    const out = resolve(s.out as string);
    const model = modelRef(s.model as string);
    if (fs.existsSync(out) && fs.readdirSync(out).length > 0 && !v.overwrite)
      throw new UsageError(
        `--out ${out} is not empty; pass --overwrite to replace what lora scale-out wrote there`,
      );
    if (model === out) throw new UsageError("--out is the model folder; give a new folder");

    const data = resolve(s.data as string);
    const train = readRows(data, undefined, ["train"]);
    const format = dataFormat(train, data);
    const vp = validPath({ ...s, data });
    const valid = vp ? readRows(resolve(vp), undefined, ["valid", "test", "train"]) : null;
    if (valid && dataFormat(valid, vp!) !== format)
      throw new UsageError(
        `${vp}: its rows are ${dataFormat(valid, vp!)} but the training rows are ${format}; use one format`,
      );

    const plan = enginePlan(
      s,
      o,
      { format, train: "data/train.jsonl", valid: valid ? "data/valid.jsonl" : null },
      model,
      s.adapter ? "init-adapter" : null,
    );
    const diffs = differences(s, o, format, train.length, valid !== null);

    if (v.overwrite) removeOwnFiles(out);
    fs.mkdirSync(join(out, "data"), { recursive: true });
    if (s.adapter)
      copyInitAdapter(resolve(s.adapter as string), join(out, "init-adapter"), s.dropout as number);
    fs.writeFileSync(join(out, "data", "train.jsonl"), trlJsonl(train));
    if (valid) fs.writeFileSync(join(out, "data", "valid.jsonl"), trlJsonl(valid));
    fs.writeFileSync(join(out, "train.py"), trainPy(plan));
    fs.writeFileSync(join(out, "accelerate_config.yaml"), accelerateConfigYaml(o));
    fs.writeFileSync(join(out, "requirements.txt"), requirementsTxt(o.strategy));
    fs.writeFileSync(join(out, "README.md"), readme(plan, diffs, flagsLine(v)));

    console.log(
      `wrote ${out}: train.py, accelerate_config.yaml, requirements.txt, README.md, data/ (${train.length} ${format} rows${valid ? `, ${valid.length} validation rows` : ""})`,
    );
    if (diffs.length > 0) {
      console.error(
        `not identical to lora train in the engine (${diffs.length}; also in ${join(out, "README.md")}):`,
      );
      for (const d of diffs) console.error(`  --${d.setting}: ${d.what}`);
    }
    console.log(`run it: cd ${out} && pip install -r requirements.txt && ${LAUNCH}`);
    console.log(`the adapter comes back in ${join(out, plan.adapter_out)}`);
  },
};
