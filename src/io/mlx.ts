/**
 * mlx-lm LoRA adapters <-> PEFT. An mlx-lm adapter folder (what `mlx_lm.lora --train` writes) holds
 *   adapters.safetensors  <mlx module path>.lora_a [in, r] and .lora_b [r, out], F32, metadata {"format": "mlx"}
 *                         (also written every --save-every steps as 0000100_adapters.safetensors, ...)
 *   adapter_config.json   the whole training config; load_adapters reads fine_tune_type ("lora" when absent;
 *                         "dora", "full"), num_layers (the last N blocks are adapted; 0 or less: all of them)
 *                         and lora_parameters {rank, scale, dropout, keys}. keys are module paths inside a
 *                         block ("self_attn.q_proj"), or whole paths from the model's root ("lm_head"); absent:
 *                         every linear layer (and embedding) of those blocks.
 * The forward is y + scale·(x @ lora_a @ lora_b), scale used directly: so PEFT's A = lora_aᵀ, B = lora_bᵀ,
 * r = rank and lora_alpha = scale·rank.
 * Module paths: mlx-lm's llama-style models use Hugging Face's names (model.layers.{i}.self_attn.q_proj);
 * its GPT-2 holds everything under model. where HF has transformer. (model.h.{i}.attn.c_attn), and a tied
 * head (GPT-2 always; others when tie_word_embeddings) is embed_tokens.as_linear, not a module: there is
 * no lm_head to adapt. Facts from ml-explore/mlx-lm: mlx_lm/tuner/utils.py (linear_to_lora_layers,
 * load_adapters), tuner/lora.py (LoRALinear), lora.py (CONFIG_DEFAULTS, save_config), tuner/trainer.py
 * (save), models/gpt2.py and llama.py (module trees).
 */
import type { LoraConfig } from "../lora/config.js";
import { DoRALinear } from "../lora/dora.js";
import { layerIndex, loraLayers } from "../lora/inject.js";
import type { LoRALinear } from "../lora/layer.js";
import type { CausalLM } from "../models/index.js";
import { ConfigFields, showValue } from "../models/model.js";
import { Embedding } from "../nn/layers.js";
import { shapeStr } from "../tensor/shape.js";
import { loraConfigProblems } from "./peft.js";
import {
  FLOAT_DTYPES,
  type SafetensorsTensor,
  type SerializableTensor,
  serializeSafetensors,
  tensorToFloat32,
} from "./safetensors.js";

export const MLX_WEIGHTS = "adapters.safetensors";
export const MLX_CONFIG = "adapter_config.json";
/** mlx-lm's numbered checkpoints: {iteration:07d}_adapters.safetensors. */
export const MLX_CHECKPOINT = /^(\d+)_adapters\.safetensors$/;

type Json = Record<string, unknown>;

/** Our (Hugging Face) module path -> mlx-lm's: GPT-2's transformer. root is mlx-lm's model. */
export function mlxPath(path: string): string {
  return path.startsWith("transformer.") ? `model.${path.slice("transformer.".length)}` : path;
}

/** mlx-lm's module path -> ours: model.h.{i} (GPT-2's blocks in mlx-lm) is transformer.h.{i}. */
export function hfPath(path: string): string {
  return /^model\.h\.\d+\./.test(path) ? `transformer.${path.slice("model.".length)}` : path;
}

/** An mlx-lm adapter read as PEFT: the config, and the tensors under PEFT's names and layouts (F32). */
export interface MlxAdapter {
  config: LoraConfig;
  tensors: Map<string, SafetensorsTensor>;
  /** The base model adapter_config.json names ("model"), or null. */
  baseModel: string | null;
  /** lora_parameters.scale, used directly by mlx-lm. */
  scale: number;
}

const transposed = (e: SafetensorsTensor): SafetensorsTensor => {
  const [rows, cols] = e.shape as [number, number];
  const src = tensorToFloat32(e);
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = src[i * cols + j]!;
  return { dtype: "F32", shape: [cols, rows], bytes: new Uint8Array(out.buffer) };
};

/**
 * adapter_config.json + adapters.safetensors of mlx-lm -> PEFT's config and tensors, which
 * attachAdapter then fits to a model. Every problem of the config and of the tensors is reported at once.
 */
export function parseMlxAdapter(
  json: Json,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
  source: { config: string; weights: string },
  /** The model's block count: with it, each tensor is checked to lie in the last num_layers blocks. */
  numBlocks?: number,
): MlxAdapter {
  const f = new ConfigFields(json, source.config, "fix the file, or re-save the adapter with mlx_lm.lora");
  const type = json.fine_tune_type ?? "lora";
  if (type === "dora")
    f.require(
      false,
      'fine_tune_type "dora": mlx-lm DoRA adapters rescale each weight by a learned magnitude vector (the ".m" tensors), which is not supported here; train the mlx-lm adapter with --fine-tune-type lora',
    );
  else if (type === "full")
    f.require(
      false,
      'fine_tune_type "full": this folder holds fully fine-tuned weights of the last num_layers blocks, not a LoRA adapter; fuse it in mlx-lm (mlx_lm.fuse) and use the resulting model folder as --model',
    );
  else
    f.require(
      type === "lora",
      `fine_tune_type ${showValue(type)} is not one mlx-lm writes ("lora", "dora", "full")`,
    );
  const numLayers = json.num_layers;
  f.require(
    Number.isSafeInteger(numLayers),
    `"num_layers" must be an integer (how many of the last blocks are adapted), got ${showValue(numLayers)}`,
  );
  const p = json.lora_parameters;
  const params = typeof p === "object" && p !== null && !Array.isArray(p) ? (p as Json) : null;
  f.require(
    params !== null,
    `"lora_parameters" must be an object {rank, scale, dropout, keys}, got ${showValue(p)}`,
  );
  const rank = params?.rank;
  const scale = params?.scale;
  const dropout = params?.dropout ?? 0;
  const rankOk = Number.isSafeInteger(rank) && (rank as number) > 0;
  const scaleOk = typeof scale === "number" && Number.isFinite(scale) && scale > 0;
  if (params) {
    f.require(rankOk, `"lora_parameters.rank" must be a positive integer, got ${showValue(rank)}`);
    f.require(scaleOk, `"lora_parameters.scale" must be a positive finite number, got ${showValue(scale)}`);
    f.require(
      typeof dropout === "number" && dropout >= 0 && dropout < 1,
      `"lora_parameters.dropout" must be in [0, 1), got ${showValue(dropout)}`,
    );
    const keys = params.keys;
    f.require(
      keys == null || (Array.isArray(keys) && keys.every((k) => typeof k === "string")),
      `"lora_parameters.keys" must be a list of module paths, got ${showValue(keys)}`,
    );
  }
  const r = rankOk ? (rank as number) : 1;
  const s = scaleOk ? (scale as number) : 1;
  if (rankOk && scaleOk && typeof dropout === "number")
    for (const problem of loraConfigProblems({
      r,
      lora_alpha: s * r,
      lora_dropout: dropout,
      use_rslora: false,
    }))
      f.require(false, `${problem} (lora_alpha = lora_parameters.scale · rank)`);
  f.done();

  // the tensors: <path>.lora_a [in, r] and <path>.lora_b [r, out], as floats
  const problems: string[] = [];
  const pairs = new Map<string, { a?: SafetensorsTensor; b?: SafetensorsTensor }>();
  for (const [key, e] of tensors) {
    const m = /^(.+)\.(lora_a|lora_b|m)$/.exec(key);
    if (!m) {
      problems.push(`unexpected tensor "${key}" (an mlx-lm LoRA adapter holds <module>.lora_a and .lora_b)`);
      continue;
    }
    if (m[2] === "m") {
      problems.push(`"${key}" is a DoRA magnitude vector; DoRA adapters are not supported`);
      continue;
    }
    const which = m[2] === "lora_a" ? "a" : "b";
    const want = which === "a" ? `[in, ${r}]` : `[${r}, out]`;
    const pos = which === "a" ? 1 : 0;
    if (e.shape.length !== 2 || e.shape[pos] !== r)
      problems.push(`"${key}" has shape ${shapeStr(e.shape)}, expected ${want} (lora_parameters.rank ${r})`);
    else if (!FLOAT_DTYPES.includes(e.dtype))
      problems.push(`"${key}" is stored as ${e.dtype}; LoRA weights are floats (${FLOAT_DTYPES.join(", ")})`);
    else {
      const pair = pairs.get(m[1]!) ?? {};
      pair[which] = e;
      pairs.set(m[1]!, pair);
    }
  }
  for (const [path, { a, b }] of pairs)
    if (!a || !b) problems.push(`"${path}" has lora_${a ? "a" : "b"} but no lora_${a ? "b" : "a"}`);
  // as load_adapters does: every tensor must belong to a LoRA layer that the config creates
  const keys = (params?.keys as string[] | null | undefined) ?? null;
  const n = numLayers as number;
  for (const path of pairs.keys()) {
    if (keys?.includes(path)) continue; // a whole path, matched from the model's root
    const m = /^model\.(?:layers|h)\.(\d+)\.(.+)$/.exec(path);
    const block = m ? Number(m[1]) : null;
    const inKeys = m !== null && (keys === null || keys.includes(m[2]!));
    const inBlocks =
      block !== null && (numBlocks === undefined || n <= 0 || block >= numBlocks - Math.min(n, numBlocks));
    if (!(inKeys && inBlocks))
      problems.push(
        `"${path}" is not a module the config adapts (lora_parameters.keys ${JSON.stringify(keys)}, num_layers ${n}${numBlocks === undefined ? "" : ` of ${numBlocks} blocks`})`,
      );
  }
  if (tensors.size === 0) problems.push("the file holds no tensors");
  if (problems.length > 0)
    throw new Error(
      `${source.weights}: not a LoRA adapter mlx-lm's load_adapters accepts (${problems.length} problem${problems.length > 1 ? "s" : ""}):\n${problems.map((p) => `  - ${p}`).join("\n")}`,
    );

  const out = new Map<string, SafetensorsTensor>();
  const paths: string[] = [];
  for (const [path, { a, b }] of pairs) {
    const hf = hfPath(path);
    paths.push(hf);
    out.set(`base_model.model.${hf}.lora_A.weight`, transposed(a!));
    out.set(`base_model.model.${hf}.lora_B.weight`, transposed(b!));
  }
  const targets = compactTargets(paths);
  return {
    config: {
      r,
      lora_alpha: s * r,
      lora_dropout: dropout as number,
      target_modules: targets.target_modules,
      layers_to_transform: targets.layers_to_transform,
      use_rslora: false,
      init_lora_weights: true,
    },
    tensors: out,
    baseModel: typeof json.model === "string" ? json.model : null,
    scale: s,
  };
}

/**
 * PEFT targets that select exactly `paths`: the in-block module names and the blocks when every adapted
 * block has the same modules and nothing outside a block is adapted, else every path by name.
 */
function compactTargets(paths: string[]): Pick<LoraConfig, "target_modules" | "layers_to_transform"> {
  const { byLayer, outside } = splitByLayer(paths);
  const sets = [...byLayer.values()].map((s) => [...s].sort().join(","));
  if (outside.length === 0 && sets.length > 0 && sets.every((s) => s === sets[0]))
    return {
      target_modules: [...byLayer.values().next().value!].sort(),
      layers_to_transform: [...byLayer.keys()].sort((x, y) => x - y),
    };
  return { target_modules: [...paths].sort(), layers_to_transform: null };
}

/** Paths inside blocks (by block index: the path after "layers.{i}." / "h.{i}.") and the others. */
function splitByLayer(paths: string[]): { byLayer: Map<number, Set<string>>; outside: string[] } {
  const byLayer = new Map<number, Set<string>>();
  const outside: string[] = [];
  for (const path of paths) {
    const i = layerIndex(path);
    const m = /(?:^|\.)(?:layers|h)\.\d+\.(.+)$/.exec(path);
    if (i === null || !m) outside.push(path);
    else {
      const set = byLayer.get(i) ?? new Set<string>();
      set.add(m[1]!);
      byLayer.set(i, set);
    }
  }
  return { byLayer, outside };
}

export interface MlxExport {
  files: Record<string, Uint8Array | string>;
  /** What the conversion had to do (rank padding, whole-path keys), one line each. */
  notes: string[];
}

/**
 * The LoRA layers of `model` as an mlx-lm adapter folder: adapters.safetensors and adapter_config.json
 * as mlx_lm.lora writes them. mlx-lm has one rank and one scale per adapter, and adapts the same modules
 * in each of the last num_layers blocks. So:
 *   - modules of lower rank are zero-padded to the largest (B·A unchanged, exactly);
 *   - a module whose scale differs from the others' by a power of two gets the ratio folded into its
 *     lora_b (exact in floating point); any other ratio is refused, naming the modules;
 *   - blocks other than the last N, or different modules in different blocks, are written as whole
 *     module paths in keys, which mlx-lm matches from the model's root (its tuner since August 2024, #914);
 *   - a tied head (mlx-lm computes it as embed_tokens.as_linear) cannot be adapted there: refused.
 */
export function mlxAdapterFiles(
  model: CausalLM,
  opts: {
    /** The base model adapter_config.json names ("model"). */
    baseModel: string;
    /** lora_parameters.dropout (the layers loaded from a file keep none). */
    dropout: number;
  },
): MlxExport {
  const layers = loraLayers(model);
  if (layers.length === 0) throw new Error("the model has no LoRA layers to export");
  if (layers.some(([, l]) => l instanceof DoRALinear))
    throw new Error(
      "a DoRA adapter (use_dora: true) is not exported to mlx-lm here: mlx-lm's DoRA layers (fine_tune_type dora, a magnitude m per row) are not written by this library yet. Merge it into the base model instead (lora merge --model M --adapter A --out DIR)",
    );
  const problems: string[] = [];
  const notes: string[] = [];
  const embeddings = new Set(
    model
      .namedModules()
      .filter((e): e is [string, Embedding] => e[1] instanceof Embedding)
      .map(([, m]) => m.weight),
  );
  for (const [path, l] of layers)
    if (model.modelType === "gpt2" && path === model.headName)
      problems.push(
        `"${path}": mlx-lm's GPT-2 always computes its head as wte.as_linear, with no lm_head module to adapt: train without it in the targets`,
      );
    else if (embeddings.has(l.base_layer.weight))
      problems.push(
        `"${path}" shares its weight with the embedding (a tied head); mlx-lm computes such a head as embed_tokens.as_linear, with no module to adapt: train without it in the targets`,
      );

  const rank = Math.max(...layers.map(([, l]) => l.r));
  // the scale most modules have (of a tie, the smallest) is the adapter's; others must be a power of two away
  const counts = new Map<number, number>();
  for (const [, l] of layers) counts.set(l.scaling, (counts.get(l.scaling) ?? 0) + 1);
  const scale = [...counts].sort((x, y) => y[1] - x[1] || x[0] - y[0])[0]![0];
  const odd: string[] = [];
  const padded: string[] = [];
  const folded: string[] = [];
  const tensors: SerializableTensor[] = [];
  for (const [path, l] of layers) {
    const ratio = l.scaling / scale;
    const exp = Math.log2(ratio);
    if (!Number.isInteger(exp)) {
      odd.push(`${path} (scale ${l.scaling})`);
      continue;
    }
    if (ratio !== 1) folded.push(path);
    if (l.r < rank) padded.push(path);
    tensors.push(...mlxPair(mlxPath(path), l, rank, ratio));
  }
  if (odd.length > 0)
    problems.push(
      `mlx-lm has one scale per adapter, and ${odd.length} module(s) have a scale that is not a power of two times ${scale} (the scale of most modules), so it cannot be folded into lora_b exactly: ${odd.slice(0, 6).join(", ")}${odd.length > 6 ? ", ..." : ""}; train with one lora_alpha/r for every module (no alpha_pattern/rank_pattern)`,
    );
  if (problems.length > 0)
    throw new Error(
      `cannot express this adapter in mlx-lm's format (${problems.length} problem${problems.length > 1 ? "s" : ""}):\n${problems.map((p) => `  - ${p}`).join("\n")}`,
    );
  if (padded.length > 0)
    notes.push(
      `zero-padded ${padded.length} module(s) to rank ${rank} (B·A unchanged): ${padded.join(", ")}`,
    );
  if (folded.length > 0)
    notes.push(
      `folded a power-of-two scale ratio into lora_b of ${folded.length} module(s) (exact): ${folded.join(", ")}`,
    );

  const { byLayer, outside } = splitByLayer(layers.map(([p]) => p));
  const n = model.numLayers;
  const blocks = [...byLayer.keys()].sort((x, y) => x - y);
  const sets = [...byLayer.values()].map((s) => [...s].sort().join(","));
  const lastN = blocks.every((b, i) => b === n - blocks.length + i);
  const uniform = sets.every((s) => s === sets[0]);
  let keys: string[];
  let numLayers: number;
  if (blocks.length === 0 || (lastN && uniform)) {
    keys = [...(byLayer.values().next().value ?? [])].sort().concat(outside.map(mlxPath));
    numLayers = blocks.length;
  } else {
    keys = layers.map(([p]) => mlxPath(p)).sort();
    numLayers = n;
    notes.push(
      `the adapted blocks (${blocks.join(", ")}) are not the same modules in each of the last N blocks, so keys name whole module paths, which mlx-lm's tuner matches from the model's root`,
    );
  }
  const config = {
    fine_tune_type: "lora",
    lora_parameters: { rank, dropout: opts.dropout, scale, keys },
    model: opts.baseModel,
    num_layers: numLayers,
  };
  return {
    files: {
      [MLX_WEIGHTS]: serializeSafetensors(tensors, { format: "mlx" }),
      [MLX_CONFIG]: `${JSON.stringify(config, null, 4)}\n`,
    },
    notes,
  };
}

/** lora_a = Aᵀ [in, rank] and lora_b = ratio·Bᵀ [rank, out], zero-padded from the layer's r to rank. */
function mlxPair(path: string, l: LoRALinear, rank: number, ratio: number): SerializableTensor[] {
  const { r, inFeatures: inF, outFeatures: outF } = l;
  const A = l.lora_A.data; // [r, in]
  const B = l.lora_B.data; // [out, r]
  const a = new Float32Array(inF * rank);
  const b = new Float32Array(rank * outF);
  for (let k = 0; k < r; k++) {
    for (let i = 0; i < inF; i++) a[i * rank + k] = A[k * inF + i]!;
    for (let o = 0; o < outF; o++) b[k * outF + o] = B[o * r + k]! * ratio;
  }
  return [
    { name: `${path}.lora_a`, dtype: "F32", shape: [inF, rank], data: a },
    { name: `${path}.lora_b`, dtype: "F32", shape: [rank, outF], data: b },
  ];
}
