/** `lora params`: the paper's parameter arithmetic, for given shapes or for a model folder's targets. */

import { existsSync } from "node:fs";
import { join } from "node:path";
import { checkModelTensors } from "../io/model-loader.js";
import { isGGUFFile } from "../io/node/gguf-file.js";
import { readGGUFModelHeader } from "../io/node/gguf-model-file.js";
import { readJson } from "../io/node/json-file.js";
import { readModelWeightHeaders } from "../io/node/safetensors-file.js";
import { LORA_DEFAULTS } from "../lora/config.js";
import { applyLoRA, loraLayers, parameterReport } from "../lora/inject.js";
import { buildModel, modelFamily } from "../models/index.js";
import { numel } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";
import { type Command, num, str, UsageError, type Values } from "./command.js";
import { loraTargets, parseLayers } from "./train-settings.js";

const fmt = (n: number) => n.toLocaleString("en-US");

export function parseShape(s: string): [number, number] {
  const m = /^(\d+)[x×*,](\d+)$/i.exec(s.trim());
  if (!m || Number(m[1]) <= 0 || Number(m[2]) <= 0) {
    throw new UsageError(`--shape must look like DxK with positive integers (e.g. 4096x4096), got "${s}"`);
  }
  return [Number(m[1]), Number(m[2])];
}

export interface ParamRow {
  shape: [number, number];
  full: number;
  lora: number;
}

/** Full d·k parameters versus r·(d + k) for each shape. */
export function paramRows(shapes: [number, number][], rank: number): ParamRow[] {
  return shapes.map(([d, k]) => {
    if (rank > Math.min(d, k)) {
      throw new UsageError(`--rank ${rank} is larger than min(d, k) = ${Math.min(d, k)} for shape ${d}x${k}`);
    }
    return { shape: [d, k], full: d * k, lora: rank * (d + k) };
  });
}

export function reduction(full: number, lora: number): string {
  const x = full / lora;
  return `${Number.isInteger(x) ? fmt(x) : x >= 100 ? fmt(Math.round(x)) : x.toFixed(1)}×`;
}

export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(header), ...rows.map(line)].join("\n");
}

/**
 * Per target module type of a model folder: how many matrices, their full and their LoRA parameter
 * counts. Only config.json is read; every weight is a view of a shared zero buffer, so a large
 * model costs about the memory of its largest tensor.
 */
function modelParams(dir: string, v: Values, rank: number): void {
  const gguf = isGGUFFile(dir) ? readGGUFModelHeader(dir) : null;
  const config = gguf?.config ?? readJson(join(dir, "config.json"))!;
  const family = modelFamily(config, gguf ? dir : join(dir, "config.json"));
  // with weights beside it, a config whose sizes the tensors do not back (1e6 layers) is refused from
  // the headers alone, before a module is built (a GGUF file: from its tensor table)
  if (gguf) checkModelTensors(config, gguf.infos, dir);
  else if (
    existsSync(join(dir, "model.safetensors")) ||
    existsSync(join(dir, "model.safetensors.index.json"))
  )
    checkModelTensors(config, readModelWeightHeaders(dir).tensors, dir);
  let shared = new Float32Array(0);
  const model = buildModel(config, (_n, shape) => {
    if (shared.length < numel(shape)) shared = new Float32Array(numel(shape));
    return new Tensor(shared.subarray(0, numel(shape)), shape);
  });
  const targets = loraTargets(str(v, "targets"), family.defaultTargets, config.model_type);
  const layers = str(v, "layers");
  applyLoRA(model, {
    ...LORA_DEFAULTS,
    r: rank,
    target_modules: targets,
    layers_to_transform: layers ? parseLayers(layers) : null,
  });
  const byType = new Map<string, { n: number; full: number; lora: number; shape: string }>();
  for (const [path, l] of loraLayers(model)) {
    const type = path.split(".").slice(-2).join("."); // e.g. self_attn.q_proj, mlp.c_proj
    const e = byType.get(type) ?? { n: 0, full: 0, lora: 0, shape: `${l.outFeatures}x${l.inFeatures}` };
    e.n++;
    e.full += l.outFeatures * l.inFeatures;
    e.lora += l.lora_A.size + l.lora_B.size;
    byType.set(type, e);
  }
  const rows = [...byType].map(([type, e]) => [
    type,
    `${e.n} × ${e.shape}`,
    fmt(e.full),
    fmt(e.lora),
    reduction(e.full, e.lora),
  ]);
  const full = [...byType.values()].reduce((s, e) => s + e.full, 0);
  const lora = [...byType.values()].reduce((s, e) => s + e.lora, 0);
  if (byType.size > 1) rows.push(["total", "", fmt(full), fmt(lora), reduction(full, lora)]);
  console.log(`${dir} (${config.model_type}), LoRA r=${rank} on ${JSON.stringify(targets)}:\n`);
  console.log(formatTable(["module", "matrices", "full", `LoRA r=${rank}`, "reduction"], rows));
  console.log(`\n${parameterReport(model).line}`);
}

export const paramsCommand: Command = {
  name: "params",
  summary: "Count trainable parameters: a full d×k matrix versus a rank-r LoRA update r·(d + k).",
  usage:
    "lora params --shape DxK [--shape DxK ...] [--rank R] [--matrices N]\n       lora params --model DIR [--rank R] [--targets LIST] [--layers LIST]",
  flags: {
    model: {
      type: "string",
      valueName: "DIR",
      description: "count for this model folder's (or GGUF file's) LoRA targets",
    },
    targets: { type: "string", valueName: "LIST", description: "with --model: names, a regex or all-linear" },
    layers: { type: "string", valueName: "LIST", description: "with --model: blocks to adapt, e.g. 0-3" },
    shape: { type: "string", multiple: true, valueName: "DxK", description: "a weight matrix shape, d×k" },
    rank: { type: "string", valueName: "R", description: "LoRA rank r (default 8)" },
    matrices: { type: "string", valueName: "N", description: "how many matrices of each shape (default 1)" },
  },
  examples: [
    "lora params --shape 1000x1000 --rank 4",
    "lora params --shape 12288x12288 --rank 4 --matrices 192",
    "lora params --model ./my-model --rank 16 --targets all-linear",
  ],
  run(v: Values) {
    const model = str(v, "model");
    if (model) return modelParams(model, v, num(v, "rank", 8, { int: true, min: 1 }));
    const shapes = ((v.shape as string[] | undefined) ?? []).map(parseShape);
    if (shapes.length === 0)
      throw new UsageError("give --model DIR or at least one --shape DxK; see 'lora params --help'");
    const rank = num(v, "rank", 8, { int: true, min: 1 });
    const n = num(v, "matrices", 1, { int: true, min: 1 });
    const rows = paramRows(shapes, rank);
    const body = rows.map((r) => [
      `${r.shape[0]}x${r.shape[1]}`,
      fmt(r.full),
      fmt(r.lora),
      reduction(r.full, r.lora),
    ]);
    const full = rows.reduce((s, r) => s + r.full, 0) * n;
    const lora = rows.reduce((s, r) => s + r.lora, 0) * n;
    if (rows.length > 1 || n > 1)
      body.push([n > 1 ? `total (×${n})` : "total", fmt(full), fmt(lora), reduction(full, lora)]);
    console.log(formatTable(["matrix", "full", `LoRA r=${rank}`, "reduction"], body));
    console.log(
      `\nLoRA trains ${fmt(lora)} parameters instead of ${fmt(full)} (${reduction(full, lora)} fewer).`,
    );
  },
};
