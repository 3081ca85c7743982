/**
 * A GGUF model as a Hugging Face checkpoint: its metadata as a config.json object, and its tensors
 * renamed to HF names (gguf-names.ts), dequantised to f32 (gguf-quants.ts) and put back in HF's layout
 * (the llama q/k rows un-permuted, GPT-2's Conv1D weights transposed back to [in, out]). The result
 * goes through the same `loadModelFromTensors` as a model folder, so an adapter trained on a GGUF model
 * is an ordinary PEFT adapter of the HF model.
 *
 * Metadata -> config.json, as transformers' GGUF loader maps it (keys are `{arch}.…`):
 * embedding_length -> hidden_size, block_count -> num_hidden_layers, feed_forward_length ->
 * intermediate_size, attention.head_count(_kv) -> num_attention_heads / num_key_value_heads,
 * attention.key_length -> head_dim, attention.layer_norm_rms_epsilon -> rms_norm_eps, context_length ->
 * max_position_embeddings, rope.freq_base -> rope_theta (llama.cpp's default 10000), rope.scaling.* ->
 * rope_scaling (linear only), rope.dimension_count < head_dim -> partial_rotary_factor; vocab_size from
 * token_embd; a missing output.weight means a tied head. A `rope_freqs.weight` tensor (the converter
 * writes Llama 3.1+'s "llama3" rope scaling as one factor per frequency, each frequency divided by its
 * factor) becomes rope_scaling {rope_type: "longrope", short_factor = long_factor = those factors,
 * attention_factor 1}: the same frequencies, at every length, in a form config.json can say.
 */
import { type GGUFHeader, type GGUFTensorInfo, ggufNumber, ggufString } from "./gguf.js";
import {
  type GGUFArch,
  ggufTransposed,
  hfTensorName,
  isGGUFArch,
  modelTypeOfGGUFArch,
  permutedHeads,
  unpermuteRows,
} from "./gguf-names.js";
import { canDequantize, dequantize } from "./gguf-quants.js";
import { GGUFValueType, ggmlTypeName } from "./gguf-types.js";
import type { TensorInfo } from "./model-loader.js";
import type { SafetensorsTensor } from "./safetensors.js";

type Json = Record<string, unknown>;

/** An f32 as the shortest decimal that gives it back (1e-5, not 9.999999747378752e-6), as config.json writes it. */
function f32Decimal(v: number): number {
  for (let p = 1; p <= 17; p++) {
    const d = Number(v.toPrecision(p));
    if (Math.fround(d) === v) return d;
  }
  return v;
}

const ARCHITECTURES: Record<GGUFArch, string> = {
  llama: "LlamaForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
  gpt2: "GPT2LMHeadModel",
};

/** The tensor of per-frequency RoPE factors (Llama 3.1+), read before the config is made. */
export const ROPE_FREQS = "rope_freqs.weight";

/** Every problem of a GGUF model file, listed at once (as model-loader lists a folder's). */
export class GGUFModelError extends Error {
  constructor(source: string, problems: string[], advice: string) {
    const shown = problems.slice(0, 20).map((p) => `  - ${p}`);
    if (problems.length > 20) shown.push(`  ... and ${problems.length - 20} more`);
    super(
      `${source}: cannot load this GGUF model (${problems.length} problem${problems.length > 1 ? "s" : ""}):\n${shown.join("\n")}\n${advice}`,
    );
    this.name = "GGUFModelError";
  }
}

/** The GGUF architecture of a file, checked to be one this toolkit loads. */
export function ggufModelArch(h: GGUFHeader, source: string): GGUFArch {
  const arch = ggufString(h, "general.architecture", source);
  const type = ggufString(h, "general.type", source);
  if (type !== undefined && type !== "model")
    throw new GGUFModelError(
      source,
      [`general.type is ${JSON.stringify(type)}, not "model"`],
      type === "adapter"
        ? "This is a LoRA adapter: pass it as --adapter, with the base model as --model."
        : "Pass a GGUF model file.",
    );
  if (arch === undefined || !isGGUFArch(arch))
    throw new GGUFModelError(
      source,
      [`general.architecture is ${JSON.stringify(arch ?? null)}; supported: llama, qwen2, qwen3, gpt2`],
      "Use a model of a supported architecture, or its Hugging Face folder.",
    );
  return arch;
}

/**
 * The config.json object of a GGUF model, from its metadata and tensor table; `ropeFreqs` holds the
 * values of its rope_freqs.weight tensor when it has one (see `ROPE_FREQS`).
 */
export function ggufModelConfig(h: GGUFHeader, source: string, ropeFreqs?: Float32Array): Json {
  const arch = ggufModelArch(h, source);
  const problems: string[] = [];
  const key = (k: string) => `${arch}.${k}`;
  const num = (k: string, required = true): number | undefined => {
    const v = ggufNumber(h, key(k), source);
    if (v === undefined) {
      if (required) problems.push(`metadata ${key(k)} is missing`);
      return undefined;
    }
    if (!Number.isFinite(v)) problems.push(`metadata ${key(k)} is ${v}`);
    return h.types.get(key(k))?.type === GGUFValueType.FLOAT32 ? f32Decimal(v) : v;
  };
  const tensors = new Map(h.tensors.map((t) => [t.name, t]));
  const embd = tensors.get("token_embd.weight");
  if (embd?.dims.length !== 2) problems.push("tensor token_embd.weight (2 dims) is missing");
  const vocab = embd?.dims[1] ?? ggufNumber(h, key("vocab_size"), source);
  const hidden = num("embedding_length");
  const layers = num("block_count");
  const heads = num("attention.head_count");
  const ctx = num("context_length", false);
  const ff = num("feed_forward_length");
  const tokenId = (k: string) => {
    const v = ggufNumber(h, `tokenizer.ggml.${k}`, source);
    return v === undefined || v < 0 || (vocab !== undefined && v >= vocab) ? null : v;
  };
  const common: Json = {
    architectures: [ARCHITECTURES[arch]],
    model_type: modelTypeOfGGUFArch(arch),
    vocab_size: vocab,
    bos_token_id: tokenId("bos_token_id"),
    eos_token_id: tokenId("eos_token_id"),
    torch_dtype: "float32",
  };
  let config: Json;
  if (arch === "gpt2") {
    const eps = num("attention.layer_norm_epsilon", false);
    if (hidden !== undefined && ff !== undefined && ff !== 4 * hidden)
      problems.push(
        `${key("feed_forward_length")} is ${ff}, but GPT-2's MLP is 4 × ${key("embedding_length")} = ${4 * hidden}`,
      );
    config = {
      ...common,
      n_embd: hidden,
      n_layer: layers,
      n_head: heads,
      n_positions: ctx ?? 1024,
      n_ctx: ctx ?? 1024,
      layer_norm_epsilon: eps ?? 1e-5,
      activation_function: "gelu_new",
      tie_word_embeddings: !tensors.has("output.weight"),
    };
  } else {
    const kv = num("attention.head_count_kv", false) ?? heads;
    const keyLen = num("attention.key_length", false);
    const valueLen = num("attention.value_length", false);
    const headDim = keyLen ?? (hidden !== undefined && heads ? hidden / heads : undefined);
    if (valueLen !== undefined && keyLen !== undefined && valueLen !== keyLen)
      problems.push(
        `${key("attention.value_length")} (${valueLen}) differs from ${key("attention.key_length")} (${keyLen})`,
      );
    if (headDim !== undefined && !Number.isInteger(headDim))
      problems.push(`the head size ${headDim} is not a whole number`);
    const rot = num("rope.dimension_count", false);
    const scalingType = ggufString(h, key("rope.scaling.type"), source);
    const scaleLinear = num("rope.scale_linear", false);
    const factor = num("rope.scaling.factor", false) ?? scaleLinear;
    let ropeScaling: Json | null = null;
    if (
      (scalingType === "linear" || (scalingType === undefined && scaleLinear !== undefined)) &&
      factor !== undefined &&
      factor !== 1
    )
      ropeScaling = { rope_type: "linear", factor };
    else if (scalingType !== undefined && scalingType !== "none" && scalingType !== "linear")
      problems.push(
        `${key("rope.scaling.type")} ${JSON.stringify(scalingType)} is not supported (none or linear)`,
      );
    const freqs = tensors.get(ROPE_FREQS);
    if (freqs) {
      const half = (rot ?? headDim ?? 0) / 2;
      if (ropeScaling) problems.push(`tensor ${ROPE_FREQS} and ${key("rope.scaling.type")} both scale RoPE`);
      else if (!ropeFreqs) problems.push(`tensor ${ROPE_FREQS} was not read`);
      else if (freqs.elements !== half || !ropeFreqs.every((f) => Number.isFinite(f) && f > 0))
        problems.push(`tensor ${ROPE_FREQS} must hold ${half} positive factors (one per rotated frequency)`);
      else {
        const factors = Array.from(ropeFreqs);
        ropeScaling = {
          rope_type: "longrope",
          short_factor: factors,
          long_factor: factors,
          original_max_position_embeddings: ctx ?? 2048,
          attention_factor: 1,
        };
      }
    }
    config = {
      ...common,
      hidden_size: hidden,
      num_hidden_layers: layers,
      intermediate_size: ff,
      num_attention_heads: heads,
      num_key_value_heads: kv,
      head_dim: headDim,
      hidden_act: "silu",
      rms_norm_eps: num("attention.layer_norm_rms_epsilon") ?? 1e-6,
      max_position_embeddings: ctx ?? 2048,
      rope_theta: num("rope.freq_base", false) ?? 10000,
      rope_scaling: ropeScaling,
      tie_word_embeddings: !tensors.has("output.weight"),
      attention_bias: arch === "qwen2" || tensors.has("blk.0.attn_q.bias"),
      mlp_bias: tensors.has("blk.0.ffn_up.bias"),
    };
    if (rot !== undefined && headDim !== undefined && rot !== headDim)
      config.partial_rotary_factor = rot / headDim;
    if (arch === "qwen2" || arch === "qwen3")
      Object.assign(config, { use_sliding_window: false, sliding_window: null });
  }
  if (problems.length)
    throw new GGUFModelError(
      source,
      problems,
      "The file's metadata is incomplete or of a kind not handled here.",
    );
  return config;
}

/** How one GGUF tensor becomes one HF checkpoint tensor. */
export interface GGUFTensorPlan {
  tensor: GGUFTensorInfo;
  hfName: string;
  /** The HF (row-major) shape. */
  shape: number[];
  /** Un-permute the rows with this many heads (llama q/k), or null. */
  heads: number | null;
  /** Stored transposed relative to HF (GPT-2 Conv1D). */
  transposed: boolean;
}

/**
 * The HF name, shape and transforms of every tensor of a GGUF model, with every tensor that has no
 * HF name or a type that cannot be dequantised listed at once. `infos` is what checkModelTensors takes.
 */
export function ggufTensorPlan(
  h: GGUFHeader,
  config: Json,
  source: string,
): { plan: GGUFTensorPlan[]; infos: Map<string, TensorInfo> } {
  const arch = ggufModelArch(h, source);
  const heads = {
    num_attention_heads: config.num_attention_heads as number,
    num_key_value_heads: config.num_key_value_heads as number | undefined,
  };
  const problems: string[] = [];
  const plan: GGUFTensorPlan[] = [];
  for (const t of h.tensors) {
    const hfName = hfTensorName(arch, t.name);
    if (hfName === null) {
      if (t.name !== ROPE_FREQS)
        problems.push(`tensor ${t.name} has no Hugging Face name in the ${arch} architecture`);
      continue;
    }
    if (!canDequantize(t.type)) {
      problems.push(`tensor ${t.name} has type ${ggmlTypeName(t.type)}, which cannot be loaded`);
      continue;
    }
    const transposed = ggufTransposed(arch, hfName);
    if (transposed && t.dims.length !== 2) {
      problems.push(`tensor ${t.name} has ${t.dims.length} dims, expected 2`);
      continue;
    }
    const shape = transposed ? [t.dims[0]!, t.dims[1]!] : t.shape;
    const n = permutedHeads(arch, hfName, heads);
    if (n !== null && (t.shape[0]! % (2 * n) !== 0 || !Number.isInteger(n)))
      problems.push(
        `tensor ${t.name} has ${t.shape[0]} rows, which do not split into ${n} heads of an even size`,
      );
    plan.push({ tensor: t, hfName, shape, heads: n, transposed });
  }
  if (problems.length)
    throw new GGUFModelError(
      source,
      problems,
      "Supported tensor types: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K (a Q4_K_M or Q8_0 file loads); convert or quantise the model to one of these.",
    );
  const infos = new Map<string, TensorInfo>(plan.map((p) => [p.hfName, { dtype: "F32", shape: p.shape }]));
  return { plan, infos };
}

/** The f32 HF tensor of one planned GGUF tensor, from its stored bytes. */
export function ggufToHFTensor(p: GGUFTensorPlan, bytes: Uint8Array): SafetensorsTensor {
  const t = p.tensor;
  let data = dequantize(bytes, t.type, t.elements, t.name);
  if (p.heads !== null) {
    const rows = t.shape[0]!;
    data = unpermuteRows(data, rows, t.elements / rows, p.heads);
  }
  if (p.transposed) {
    // stored row-major [out, in] (ggml ne = [in, out]); HF's Conv1D is [in, out]
    const [inF, outF] = t.dims as [number, number];
    const out = new Float32Array(data.length);
    for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) out[i * outF + o] = data[o * inF + i]!;
    data = out;
  }
  return {
    dtype: "F32",
    shape: p.shape,
    bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
}
