/**
 * PEFT LoRA adapter <-> llama.cpp's GGUF LoRA adapter, as llama.cpp's `convert_lora_to_gguf.py` writes
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
import { patternValue } from "../lora/inject.js";
import { encodeFromFloat32 } from "../tensor/dtype.js";
import { shapeStr } from "../tensor/shape.js";
import {
  ggufArchOfModelType,
  ggufModuleName,
  type HeadCounts,
  permutedHeads,
  permuteRows,
} from "./gguf-names.js";
import { GGMLType } from "./gguf-types.js";
import { type GGUFValue, type GGUFWriteTensor, gguf, serializeGGUF } from "./gguf-write.js";
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
