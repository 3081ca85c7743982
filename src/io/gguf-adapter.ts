/**
 * PEFT LoRA adapter <-> llama.cpp's GGUF LoRA adapter (written by `ggufAdapterFromPeft`, read back by
 * `readGGUFAdapter`), as llama.cpp's `convert_lora_to_gguf.py` writes
 * it and `llama_adapter_lora_init` (src/llama-adapter.cpp) checks and applies it:
 * - metadata `general.architecture` (the base model's GGUF architecture: llama.cpp refuses a mismatch),
 *   `general.type = "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha` (f32);
 * - per adapted module, `<GGUF tensor name>.lora_a` with ne = [in, r] and `.lora_b` with ne = [r, out]:
 *   PEFT's A [r, in] and B [out, r] stored row-major, unchanged;
 * - llama.cpp computes y = W·x + adapter_scale · (alpha / r) · B·(A·x), with r read per tensor from
 *   `lora_b`'s ne[0] and one alpha for the whole file;
 * - for the `llama` architecture the rows of `q_proj`/`k_proj` in GGUF are permuted to the interleaved
 *   RoPE layout (n_head for q, n_kv_head for k), so the rows of those modules' B are permuted the same way
 *   (A multiplies the input, which is not permuted). Without it the adapter loads and computes nonsense.
 */
import { type LoraConfig, loraScaling } from "../lora/config.js";
import { DoRALinear } from "../lora/dora.js";
import { loraLayers, patternValue } from "../lora/inject.js";
import type { Module } from "../nn/module.js";
import { encodeFromFloat32 } from "../tensor/dtype.js";
import { shapeStr } from "../tensor/shape.js";
import { type GGUFByteSource, type GGUFTensorInfo, ggufNumber, ggufString, parseGGUFHeader } from "./gguf.js";
import {
  type GGUFArch,
  ggufArchOfModelType,
  ggufModuleName,
  type HeadCounts,
  hfModuleName,
  permutedHeads,
  permuteRows,
  unpermuteRows,
} from "./gguf-names.js";
import { canDequantize, dequantize } from "./gguf-quants.js";
import { GGMLType, ggmlTypeName } from "./gguf-types.js";
import { type GGUFValue, type GGUFWriteTensor, gguf, serializeGGUF } from "./gguf-write.js";
import { adapterTensors } from "./peft.js";
import { FLOAT_DTYPES, type SafetensorsTensor, tensorToFloat32 } from "./safetensors.js";

/** The tensor types `lora export --outtype` writes (the converter's f32 default and its 16-bit types). */
export const GGUF_ADAPTER_OUTTYPES = ["f32", "f16", "bf16"] as const;
export type GGUFAdapterOuttype = (typeof GGUF_ADAPTER_OUTTYPES)[number];

const OUTTYPE: Record<GGUFAdapterOuttype, { ggml: GGMLType; dtype: "F32" | "F16" | "BF16" }> = {
  f32: { ggml: GGMLType.F32, dtype: "F32" },
  f16: { ggml: GGMLType.F16, dtype: "F16" },
  bf16: { ggml: GGMLType.BF16, dtype: "BF16" },
};

/** PEFT's on-disk LoRA keys: base_model.model.<module>.lora_A.weight / lora_B.weight. */
const PEFT_KEY = /^base_model\.model\.(.+)\.lora_(A|B)\.weight$/;
const PEFT_EMBEDDING_KEY = /^base_model\.model\.(.+)\.lora_embedding_(A|B)$/;

export interface GGUFAdapterModule {
  /** The HF module path ("model.layers.0.self_attn.q_proj"). */
  path: string;
  /** Its GGUF tensor name ("blk.0.attn_q.weight"). */
  gguf: string;
  r: number;
  /** PEFT's scale for this module (lora_alpha / r, or / √r with rsLoRA, after rank_pattern/alpha_pattern). */
  scale: number;
  /** The factor B was multiplied by so that llama.cpp's alpha_file / r equals `scale` (1: none). */
  folded: number;
  /** The head count its B rows were permuted with (llama q/k), or null. */
  permutedHeads: number | null;
}

export interface GGUFAdapterExport {
  bytes: Uint8Array;
  arch: string;
  /** The `adapter.lora.alpha` written. */
  alpha: number;
  modules: GGUFAdapterModule[];
}

const num = (v: unknown): number | undefined => (typeof v === "number" ? v : undefined);

/** The head counts of an HF config (GPT-2 spells them n_head). */
function headCounts(config: Record<string, unknown>): HeadCounts | null {
  const q = num(config.num_attention_heads) ?? num(config.n_head);
  if (q === undefined) return null;
  return { num_attention_heads: q, num_key_value_heads: num(config.num_key_value_heads) ?? q };
}

/**
 * The GGUF LoRA file of a PEFT adapter (`config` and its tensors under PEFT's names) for the base model
 * whose config.json is `modelConfig`. `source` names the adapter in errors. Every problem is listed at
 * once: a module with no GGUF tensor, an embedding or non-LoRA tensor, a missing half, shapes that do
 * not agree with r.
 *
 * One alpha per file: `adapter.lora.alpha` = the default module's scale · r, that is lora_alpha, or
 * lora_alpha·√r for rsLoRA (so that llama.cpp's alpha / r is PEFT's alpha / √r). A module whose scale
 * differs (rank_pattern, alpha_pattern) gets its true scale folded into B:
 *   B' = B · s_module / (alpha_file / r_module),
 * which is exact: llama.cpp then computes (alpha_file / r_module) · B'·A = s_module · B·A, PEFT's update.
 */
export function ggufAdapterFromPeft(
  config: LoraConfig,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
  modelConfig: Record<string, unknown>,
  opts: { outtype?: GGUFAdapterOuttype; source?: string; modelSource?: string } = {},
): GGUFAdapterExport {
  const source = opts.source ?? "adapter";
  if (config.use_dora) throw new Error(doraRefusal(source));
  const modelSource = opts.modelSource ?? "the base model's config.json";
  const outtype = OUTTYPE[opts.outtype ?? "f32"];
  const modelType = String(modelConfig.model_type);
  const arch = ggufArchOfModelType(modelType);
  if (!arch)
    throw new Error(
      `${modelSource}: model_type "${modelType}" has no GGUF architecture here (llama, mistral, qwen2, qwen3 and gpt2 have); a GGUF adapter cannot be written for it`,
    );
  const heads = headCounts(modelConfig);
  const problems: string[] = [];
  if (config.fan_in_fan_out && arch !== "gpt2")
    problems.push("fan_in_fan_out is set, but only GPT-2's Conv1D layers store [in, out]");

  const pairs = new Map<string, { A?: SafetensorsTensor; B?: SafetensorsTensor }>();
  for (const [key, t] of tensors) {
    const m = PEFT_KEY.exec(key);
    if (!m) {
      const e = PEFT_EMBEDDING_KEY.exec(key);
      problems.push(
        e
          ? `"${key}": embedding LoRA is not exported (lora train does not make it)`
          : `"${key}" is not a LoRA A/B weight (modules_to_save, DoRA magnitudes and biases have no place in a GGUF LoRA adapter)`,
      );
      continue;
    }
    const pair = pairs.get(m[1]!) ?? {};
    pair[m[2] as "A" | "B"] = t;
    pairs.set(m[1]!, pair);
  }
  if (pairs.size === 0 && problems.length === 0) problems.push("the adapter holds no LoRA weights");

  const alphaFile = Math.fround(loraScaling(config.r, config.lora_alpha, config.use_rslora) * config.r);
  const modules: GGUFAdapterModule[] = [];
  const out: GGUFWriteTensor[] = [];
  for (const [path, { A, B }] of pairs) {
    const name = ggufModuleName(arch, path);
    if (!name) {
      problems.push(
        `"${path}" has no tensor in a GGUF model of architecture ${arch}, so llama.cpp cannot apply it`,
      );
      continue;
    }
    const tied = modelConfig.tie_word_embeddings ?? arch === "gpt2"; // GPT-2 ties by default, Llama does not
    if (name === "output" && tied === true) {
      problems.push(
        `"${path}" is the output head, which shares the embedding (tie_word_embeddings): a GGUF model of it may have no output.weight to adapt; train without the head as a target`,
      );
      continue;
    }
    if (!A || !B) {
      problems.push(`"${path}" has lora_${A ? "A" : "B"} but no lora_${A ? "B" : "A"}`);
      continue;
    }
    const bad = [A, B].filter((t) => !FLOAT_DTYPES.includes(t.dtype));
    if (bad.length > 0) {
      problems.push(`"${path}": LoRA weights stored as ${bad[0]!.dtype}; they must be floats`);
      continue;
    }
    const r = patternValue(path, config.rank_pattern, config.r);
    const alpha = patternValue(path, config.alpha_pattern, config.lora_alpha);
    if (A.shape.length !== 2 || B.shape.length !== 2 || A.shape[0] !== r || B.shape[1] !== r) {
      problems.push(
        `"${path}": lora_A ${shapeStr(A.shape)} and lora_B ${shapeStr(B.shape)} do not have rank r = ${r} ([r, in] and [out, r])`,
      );
      continue;
    }
    const [, inF] = A.shape as [number, number];
    const [outF] = B.shape as [number, number];
    const scale = loraScaling(r, alpha, config.use_rslora);
    const same = r === config.r && alpha === config.lora_alpha;
    const folded = same ? 1 : scale / (alphaFile / r);
    let b = tensorToFloat32(B);
    if (folded !== 1) b = b.map((x) => x * folded);
    const nHead = heads ? permutedHeads(arch, path, heads) : null;
    if (arch === "llama" && !heads && /\.(q|k)_proj$/.test(path))
      problems.push(
        `${modelSource} has no num_attention_heads, needed to permute "${path}"'s rows for llama.cpp`,
      );
    if (nHead !== null) {
      if (outF % (2 * nHead) !== 0) {
        problems.push(
          `"${path}": lora_B has ${outF} rows, which do not split into ${nHead} heads of an even size`,
        );
        continue;
      }
      b = permuteRows(b, outF, r, nHead);
    }
    const weight = `${name}.weight`;
    out.push(
      {
        name: `${weight}.lora_a`,
        type: outtype.ggml,
        ne: [inF, r],
        data: encode(tensorToFloat32(A), outtype.dtype),
      },
      { name: `${weight}.lora_b`, type: outtype.ggml, ne: [r, outF], data: encode(b, outtype.dtype) },
    );
    modules.push({ path, gguf: weight, r, scale, folded, permutedHeads: nHead });
  }
  if (problems.length > 0)
    throw new Error(
      `${source}: cannot be written as a GGUF LoRA adapter (${problems.length} problem${problems.length > 1 ? "s" : ""}):\n${problems.map((p) => `  - ${p}`).join("\n")}`,
    );
  const metadata: Array<[string, GGUFValue]> = [
    ["general.architecture", gguf.string(arch)],
    ["general.type", gguf.string("adapter")],
    ["adapter.type", gguf.string("lora")],
    ["adapter.lora.alpha", gguf.f32(alphaFile)],
    ["general.quantization_version", gguf.u32(2)],
  ];
  return { bytes: serializeGGUF(metadata, out), arch, alpha: alphaFile, modules };
}

// A copy when the input is a view that must not be kept (tensorToFloat32 may return a view of the file).
const encode = (data: Float32Array, dtype: "F32" | "F16" | "BF16") => encodeFromFloat32(data, dtype).slice();

/** What `readGGUFAdapter` gives: the adapter as PEFT's config and tensors (PEFT's names and layouts). */
export interface GGUFAdapterRead {
  config: LoraConfig;
  tensors: Map<string, SafetensorsTensor>;
  /** general.architecture of the file. */
  arch: string;
  /** adapter.lora.alpha (0 when absent: llama.cpp then scales by adapter_scale alone). */
  alpha: number;
}

/** The PEFT LoRA config that gives each module llama.cpp's scale alpha / r (1 when alpha is 0). */
function peftConfigOf(
  ranks: Map<string, number>,
  alpha: number,
  arch: GGUFArch,
  modelConfig: Record<string, unknown>,
): LoraConfig {
  const count = new Map<number, number>();
  for (const r of ranks.values()) count.set(r, (count.get(r) ?? 0) + 1);
  const r = [...count].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]![0];
  const rank_pattern: Record<string, number> = {};
  const alpha_pattern: Record<string, number> = {};
  for (const [path, rm] of ranks) {
    if (rm === r) continue;
    rank_pattern[path] = rm;
    if (alpha === 0) alpha_pattern[path] = rm; // scale 1 = r / r
  }
  // leaf names ("q_proj") when the adapter covers them in every block, else the module paths
  const blocks = num(modelConfig.num_hidden_layers) ?? num(modelConfig.n_layer);
  const leaves = new Map<string, number>();
  for (const path of ranks.keys()) {
    const leaf = path.split(".").pop()!;
    leaves.set(leaf, (leaves.get(leaf) ?? 0) + 1);
  }
  const perBlock = [...ranks.keys()].filter((p) => /\.(h|layers)\.\d+\./.test(p)).length === ranks.size;
  const everyBlock = blocks !== undefined && perBlock && [...leaves.values()].every((n) => n === blocks);
  return {
    r,
    lora_alpha: alpha === 0 ? r : alpha,
    lora_dropout: 0,
    target_modules: everyBlock ? [...leaves.keys()] : [...ranks.keys()],
    exclude_modules: null,
    layers_to_transform: null,
    use_rslora: false,
    init_lora_weights: true,
    rank_pattern,
    alpha_pattern,
    fan_in_fan_out: arch === "gpt2",
  };
}

/**
 * A GGUF LoRA adapter (`src`: the file's bytes, or a byte source over it; `file` names it in errors)
 * read as the PEFT adapter it computes for the base model whose config.json is `modelConfig`: tensors
 * renamed to PEFT's keys (`base_model.model.<module>.lora_A.weight` [r, in], `lora_B` [out, r]), the
 * llama q/k rows of B un-permuted, and a LoraConfig whose per-module scale is llama.cpp's alpha / r
 * (r per tensor, rank_pattern for the ranks that differ from the most common one). Checks what
 * llama.cpp checks (general.type, adapter.type, the architecture against the model's, the suffixes,
 * both halves, a.ne[1] == b.ne[0]) and lists every problem at once. `_norm.weight` tensors are skipped,
 * as llama.cpp skips them.
 */
export function readGGUFAdapter(
  src: GGUFByteSource | Uint8Array,
  file: string,
  modelConfig: Record<string, unknown>,
): GGUFAdapterRead {
  const h = parseGGUFHeader(src, file);
  const read = (t: GGUFTensorInfo) =>
    src instanceof Uint8Array ? src.subarray(t.offset, t.offset + t.bytes) : src.read(t.offset, t.bytes);
  const type = ggufString(h, "general.type", file);
  const fail = (problems: string[], advice: string): never => {
    throw new Error(
      `${file}: cannot be read as a LoRA adapter for this model (${problems.length} problem${problems.length > 1 ? "s" : ""}):\n${problems.map((p) => `  - ${p}`).join("\n")}\n${advice}`,
    );
  };
  if (type !== "adapter")
    fail(
      [`general.type is ${JSON.stringify(type ?? null)}, not "adapter"`],
      type === "model" ? "It is a GGUF model: pass it as --model." : "Pass a GGUF LoRA adapter file.",
    );
  const problems: string[] = [];
  const adapterType = ggufString(h, "adapter.type", file);
  if (adapterType !== "lora")
    problems.push(`adapter.type is ${JSON.stringify(adapterType ?? null)}; only "lora" adapters are read`);
  if (h.metadata.has("adapter.alora.invocation_tokens"))
    problems.push("it is an activated LoRA (adapter.alora.invocation_tokens), which is not supported");
  const fileArch = ggufString(h, "general.architecture", file) ?? "";
  const modelType = String(modelConfig.model_type);
  const arch = ggufArchOfModelType(modelType);
  if (!arch) problems.push(`the model's model_type "${modelType}" has no GGUF architecture here`);
  else if (fileArch !== arch)
    problems.push(
      `general.architecture is "${fileArch}", but the model's is "${arch}" (model_type ${modelType})`,
    );
  const alpha = ggufNumber(h, "adapter.lora.alpha", file) ?? 0;
  if (!(Number.isFinite(alpha) && alpha >= 0)) problems.push(`adapter.lora.alpha is ${alpha}`);
  if (problems.length > 0 || !arch) return fail(problems, "Was it exported for a different base model?");

  const pairs = new Map<string, { a?: GGUFTensorInfo; b?: GGUFTensorInfo }>();
  for (const t of h.tensors) {
    const m = /^(.+)\.lora_(a|b)$/.exec(t.name);
    if (!m) {
      if (!t.name.endsWith("_norm.weight")) problems.push(`tensor "${t.name}" has no .lora_a/.lora_b suffix`);
      continue;
    }
    const pair = pairs.get(m[1]!) ?? {};
    pair[m[2] as "a" | "b"] = t;
    pairs.set(m[1]!, pair);
  }
  if (pairs.size === 0 && problems.length === 0) problems.push("it holds no LoRA tensors");
  const heads = headCounts(modelConfig);
  const tensors = new Map<string, SafetensorsTensor>();
  const ranks = new Map<string, number>();
  for (const [name, { a, b }] of pairs) {
    const path = name.endsWith(".weight") ? hfModuleName(arch, name.slice(0, -".weight".length)) : null;
    if (!a || !b) {
      problems.push(`"${name}" has lora_${a ? "a" : "b"} but no lora_${a ? "b" : "a"}`);
      continue;
    }
    if (!path || name.startsWith("token_embd.")) {
      problems.push(
        name.startsWith("token_embd.")
          ? `"${name}": embedding LoRA is not supported`
          : `"${name}" has no Hugging Face module in the ${arch} architecture`,
      );
      continue;
    }
    const bad = [a, b].find((t) => !canDequantize(t.type) || t.dims.length !== 2);
    if (bad) {
      problems.push(
        `"${bad.name}": ${ggmlTypeName(bad.type)} [${bad.dims.join(", ")}], expected a 2-D float tensor`,
      );
      continue;
    }
    const [inF, r] = a.dims as [number, number];
    const [rb, outF] = b.dims as [number, number];
    if (r !== rb) {
      problems.push(
        `"${name}": lora_a ne [${a.dims.join(", ")}] and lora_b ne [${b.dims.join(", ")}] disagree on the rank`,
      );
      continue;
    }
    const A = dequantize(read(a), a.type, a.elements, a.name);
    let B = dequantize(read(b), b.type, b.elements, b.name);
    const nHead = heads ? permutedHeads(arch, path, heads) : null;
    if (nHead !== null) {
      if (outF % (2 * nHead) !== 0) {
        problems.push(
          `"${name}": lora_b has ${outF} rows, which do not split into ${nHead} heads of an even size`,
        );
        continue;
      }
      B = unpermuteRows(B, outF, r, nHead);
    }
    const bytes = (x: Float32Array) => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    tensors.set(`base_model.model.${path}.lora_A.weight`, { dtype: "F32", shape: [r, inF], bytes: bytes(A) });
    tensors.set(`base_model.model.${path}.lora_B.weight`, {
      dtype: "F32",
      shape: [outF, r],
      bytes: bytes(B),
    });
    ranks.set(path, r);
  }
  if (problems.length > 0) fail(problems, "Was it exported for a different base model?");
  return { config: peftConfigOf(ranks, alpha, arch, modelConfig), tensors, arch, alpha };
}

/**
 * `ggufAdapterFromPeft` for a model that carries LoRA layers (an adapter of any format, attached):
 * the PEFT config is rebuilt from the layers' own r, alpha and rsLoRA flag (the most common r and
 * alpha as r and lora_alpha, the others as rank_pattern/alpha_pattern by module path), so the result
 * is the same as exporting the PEFT folder those layers were read from.
 */
export function ggufAdapterFromModel(
  model: Module,
  modelConfig: Record<string, unknown>,
  opts: { outtype?: GGUFAdapterOuttype; source?: string; modelSource?: string } = {},
): GGUFAdapterExport {
  const layers = loraLayers(model);
  if (layers.length === 0) throw new Error(`${opts.source ?? "model"}: it has no LoRA layers to export`);
  if (layers.some(([, l]) => l instanceof DoRALinear)) throw new Error(doraRefusal(opts.source ?? "model"));
  const rslora = layers[0]![1].rslora;
  if (layers.some(([, l]) => l.rslora !== rslora))
    throw new Error(`${opts.source ?? "model"}: some LoRA layers use rsLoRA and some do not`);
  const common = (values: number[]) => {
    const n = new Map<number, number>();
    for (const v of values) n.set(v, (n.get(v) ?? 0) + 1);
    return [...n].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]![0];
  };
  const r = common(layers.map(([, l]) => l.r));
  const alpha = common(layers.map(([, l]) => l.alpha));
  const rank_pattern: Record<string, number> = {};
  const alpha_pattern: Record<string, number> = {};
  for (const [path, l] of layers) {
    if (l.r !== r) rank_pattern[path] = l.r;
    if (l.alpha !== alpha) alpha_pattern[path] = l.alpha;
  }
  const config: LoraConfig = {
    r,
    lora_alpha: alpha,
    lora_dropout: 0,
    target_modules: layers.map(([p]) => p),
    use_rslora: rslora,
    init_lora_weights: true,
    rank_pattern,
    alpha_pattern,
  };
  const tensors = new Map<string, SafetensorsTensor>(
    adapterTensors(model).map((t) => {
      const d = t.data as Float32Array;
      return [
        t.name,
        { dtype: "F32", shape: t.shape, bytes: new Uint8Array(d.buffer, d.byteOffset, d.byteLength) },
      ];
    }),
  );
  return ggufAdapterFromPeft(config, tensors, modelConfig, opts);
}

/** llama.cpp's LoRA adapters are W0 + s·B·A: a DoRA adapter's per-row magnitude has no place there. */
const doraRefusal = (source: string) =>
  `${source}: a DoRA adapter (use_dora: true) cannot be exported to GGUF: llama.cpp's LoRA adapters have no lora_magnitude_vector (the per-row rescaling). Merge it into the base model instead (lora merge --model M --adapter A --out DIR) and convert the merged model`;
