/**
 * `lora inspect PATH`: what an adapter (any format --adapter reads) or a model folder holds. The numbers
 * come from the library (lora/report.ts, models/summary.ts, io/model-loader.ts); this file prints them.
 */
import fs from "node:fs";
import { basename, join } from "node:path";
import { ggufSummary } from "../io/gguf-summary.js";
import { checkModelTensors } from "../io/model-loader.js";
import { readAdapter } from "../io/node/adapter-folder.js";
import { isGGUFFile, readGGUFHeader } from "../io/node/gguf-file.js";
import { readJson } from "../io/node/json-file.js";
import { readModelWeightHeaders } from "../io/node/safetensors-file.js";
import { adapterModules } from "../io/peft.js";
import { LORA_DEFAULTS } from "../lora/config.js";
import { findTargets } from "../lora/inject.js";
import { adapterReport, targetType } from "../lora/report.js";
import { modelFamily } from "../models/index.js";
import { modelSummary, skeletonModel } from "../models/summary.js";
import { DTYPE_SIZE, type DType } from "../tensor/dtype.js";
import { numel } from "../tensor/shape.js";
import type { Command, Values } from "./command.js";
import { formatTable } from "./params.js";

const fmt = (n: number) => n.toLocaleString("en-US");
const num = (x: number) =>
  x === 0
    ? "0"
    : Math.abs(x) >= 1e4 || Math.abs(x) < 1e-3
      ? x.toExponential(3)
      : String(Number(x.toPrecision(4)));
const bytes = (b: number) =>
  b >= 2 ** 30
    ? `${(b / 2 ** 30).toFixed(2)} GiB`
    : b >= 2 ** 20
      ? `${(b / 2 ** 20).toFixed(1)} MiB`
      : `${(b / 1024).toFixed(1)} KiB`;
const list = (xs: number[]) => xs.map(num).join(", ");

/** An adapter's report: format, base model, per target type r/alpha/scale, per module ‖ΔW‖_F and rank. */
export function inspectAdapter(path: string) {
  const read = readAdapter(path);
  const report = adapterReport(adapterModules(read.config, read.tensors, read.weights));
  return {
    kind: "adapter" as const,
    path,
    format: read.format,
    found: read.description,
    weights: read.weights,
    base_model: read.baseModel,
    use_rslora: read.config.use_rslora,
    ...report,
  };
}

/** A model folder's architecture, sizes, stored dtypes, memory, and PEFT's default LoRA targets. */
export function inspectModel(dir: string) {
  const configPath = join(dir, "config.json");
  const config = readJson(configPath)!;
  const summary = modelSummary(config, configPath);
  const headers = readModelWeightHeaders(dir);
  const dtypes: Record<string, { tensors: number; parameters: number; bytes: number }> = {};
  for (const t of headers.tensors.values()) {
    const d = (dtypes[t.dtype] ??= { tensors: 0, parameters: 0, bytes: 0 });
    d.tensors++;
    d.parameters += numel(t.shape);
    d.bytes += numel(t.shape) * DTYPE_SIZE[t.dtype as DType];
  }
  const f32 = checkModelTensors(config, headers.tensors, dir);
  const half = checkModelTensors(config, headers.tensors, dir, { baseDtype: "bf16" });
  const defaults = modelFamily(config, configPath).defaultTargets;
  const targets: Record<string, number> = {};
  if (defaults.length > 0)
    for (const [p] of findTargets(skeletonModel(config, configPath), {
      ...LORA_DEFAULTS,
      target_modules: defaults,
    }))
      targets[targetType(p)] = (targets[targetType(p)] ?? 0) + 1;
  return {
    kind: "model" as const,
    path: dir,
    ...summary,
    files: headers.files.map((f) => basename(f.path)),
    dtypes,
    parameters: f32.parameters,
    memory: { f32: f32.bytes, bf16: half.bytes },
    default_targets: defaults,
    default_target_modules: targets,
  };
}

function printAdapter(r: ReturnType<typeof inspectAdapter>): void {
  const out = [
    `adapter: ${r.found}`,
    `base model: ${r.base_model ?? "(not named)"}`,
    `parameters: ${fmt(r.parameters)} in ${r.modules.length} module(s)${r.use_rslora ? " (rsLoRA: scale = alpha/√r)" : ""}`,
    "",
    formatTable(
      ["target", "modules", "r", "alpha", "scale", "parameters"],
      r.types.map((t) => [
        t.type,
        String(t.modules),
        list(t.r),
        list(t.alpha),
        list(t.scale),
        fmt(t.parameters),
      ]),
    ),
    "",
    formatTable(
      ["module", "ΔW shape", "‖ΔW‖_F", "eff. rank", "singular values of ΔW"],
      r.modules.map((m) => [
        m.path,
        `${m.shape[0]}×${m.shape[1]}`,
        num(m.normF),
        `${m.effectiveRank}/${m.r}`,
        m.singular.slice(0, 6).map(num).join(" ") + (m.r > 6 ? " ..." : ""),
      ]),
    ),
    "",
    `eff. rank: singular values of ΔW = scale·B·A above ${r.effective_rank_tolerance}·σ_max (computed through the r×r core, ΔW is never formed)`,
  ];
  console.log(out.join("\n"));
}

function printModel(m: ReturnType<typeof inspectModel>): void {
  const targets = Object.entries(m.default_target_modules)
    .map(([t, n]) => `${t} ×${n}`)
    .join(", ");
  console.log(
    [
      `model: ${m.path} (${m.model_type}${m.architecture ? `, ${m.architecture}` : ""})`,
      `sizes: ${m.layers} layers, hidden ${m.hidden}, ${m.heads} heads, ${m.kv_heads} kv heads, head_dim ${m.head_dim}, intermediate ${m.intermediate}, vocab ${fmt(m.vocab)}, context ${fmt(m.context)}, ${m.tied_head ? "tied" : "untied"} head`,
      `weights: ${m.files.join(", ")}: ${Object.entries(m.dtypes)
        .map(([d, x]) => `${d} ${x.tensors} tensors, ${fmt(x.parameters)} values, ${bytes(x.bytes)}`)
        .join("; ")}`,
      `parameters: ${fmt(m.parameters)}; in memory ${bytes(m.memory.f32)} as f32, ${bytes(m.memory.bf16)} with --base-dtype bf16`,
      m.default_targets.length > 0
        ? `PEFT default targets: ${JSON.stringify(m.default_targets)}: ${targets}`
        : `PEFT default targets: none for ${m.model_type}; pass --targets`,
    ].join("\n"),
  );
}

/** A GGUF file's type, architecture, sizes, tensor types and metadata, from its header alone. */
export function inspectGGUF(path: string) {
  return { kind: "gguf" as const, path, ...ggufSummary(readGGUFHeader(path)) };
}

function printGGUF(g: ReturnType<typeof inspectGGUF>): void {
  const sizes = Object.entries(g.sizes)
    .map(([k, v]) => `${k} ${fmt(v)}`)
    .join(", ");
  const rows = Object.entries(g.tensor_types).map(([t, e]) => [
    t,
    String(e.tensors),
    fmt(e.elements),
    bytes(e.bytes),
  ]);
  const meta = Object.entries(g.metadata).map(
    ([k, v]) => `  ${k} = ${typeof v === "string" ? v : JSON.stringify(v)}`,
  );
  console.log(
    [
      `GGUF v${g.version} ${g.type}: ${g.path} (architecture ${g.architecture ?? "not named"}${g.name ? `, "${g.name}"` : ""})`,
      ...(sizes ? [`sizes: ${sizes}`] : []),
      `tensors: ${g.tensors}`,
      "",
      formatTable(["type", "tensors", "elements", "bytes"], rows),
      "",
      `metadata (${g.metadata_keys} keys):`,
      ...meta,
    ].join("\n"),
  );
}

export const inspectCommand: Command = {
  name: "inspect",
  summary:
    "Show what an adapter (PEFT, mlx-lm), a model folder or a GGUF file holds: ranks, scales, ‖ΔW‖ and effective rank per module; sizes, dtypes, memory; GGUF tensor types and metadata.",
  usage: "lora inspect PATH [--json]",
  positionals: { valueName: "PATH (an adapter or model folder, or a GGUF file)", min: 1, max: 1 },
  flags: {
    json: { type: "boolean", description: "print everything as one JSON object" },
  },
  examples: [
    "lora inspect ./run",
    "lora inspect ./adapters-mlx --json",
    "lora inspect ./my-model",
    "lora inspect ./model.Q4_K_M.gguf",
  ],
  run(v: Values) {
    const path = (v._ as string[])[0]!;
    if (!fs.existsSync(path)) throw new Error(`${path}: not found; pass an adapter or model folder`);
    const isModel = fs.statSync(path).isDirectory() && fs.existsSync(join(path, "config.json"));
    const r = isGGUFFile(path) ? inspectGGUF(path) : isModel ? inspectModel(path) : inspectAdapter(path);
    if (v.json) console.log(JSON.stringify(r, null, 2));
    else if (r.kind === "gguf") printGGUF(r);
    else if (r.kind === "model") printModel(r);
    else printAdapter(r);
  },
};
