/**
 * What a config.json describes, in one shape for every family (for `lora inspect`), and a model built
 * from it whose weights are all views of one shared zero buffer: its module tree and shapes, for about
 * the memory of its largest tensor (for counting and checking, never for running).
 */
import { numel } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";
import { parseGemma3Config } from "./gemma3.js";
import { parseGPT2Config } from "./gpt2.js";
import { buildModel, type CausalLM, modelFamily } from "./index.js";
import { parseLlamaConfig } from "./llama.js";
import { parsePhi3Config } from "./phi3.js";

export interface ModelSummary {
  model_type: string;
  /** config.json's architectures[0] (e.g. "LlamaForCausalLM"), or null. */
  architecture: string | null;
  layers: number;
  hidden: number;
  heads: number;
  kv_heads: number;
  head_dim: number;
  /** The MLP's inner size. */
  intermediate: number;
  vocab: number;
  /** The longest sequence (n_positions / max_position_embeddings). */
  context: number;
  tied_head: boolean;
}

/** The sizes of a config.json (checked as loading checks them; throws listing every problem). */
export function modelSummary(config: Record<string, unknown>, source = "config.json"): ModelSummary {
  modelFamily(config, source); // a supported model_type, or the error naming them
  const arch = Array.isArray(config.architectures) ? config.architectures[0] : null;
  const base = {
    model_type: config.model_type as string,
    architecture: typeof arch === "string" ? arch : null,
  };
  if (config.model_type === "gpt2") {
    const c = parseGPT2Config(config, source);
    return {
      ...base,
      layers: c.n_layer,
      hidden: c.n_embd,
      heads: c.n_head,
      kv_heads: c.n_head,
      head_dim: c.n_embd / c.n_head,
      intermediate: 4 * c.n_embd,
      vocab: c.vocab_size,
      context: c.n_positions,
      tied_head: c.tie_word_embeddings,
    };
  }
  const c =
    config.model_type === "gemma3_text"
      ? parseGemma3Config(config, source)
      : config.model_type === "phi3"
        ? parsePhi3Config(config, source)
        : parseLlamaConfig(config, source);
  return {
    ...base,
    layers: c.num_hidden_layers,
    hidden: c.hidden_size,
    heads: c.num_attention_heads,
    kv_heads: c.num_key_value_heads,
    head_dim: c.head_dim,
    intermediate: c.intermediate_size,
    vocab: c.vocab_size,
    context: c.max_position_embeddings,
    tied_head: c.tie_word_embeddings,
  };
}

/** The model of a config.json with every weight a zero view of one shared buffer (frozen). */
export function skeletonModel(config: Record<string, unknown>, source = "config.json"): CausalLM {
  let shared = new Float32Array(0);
  return buildModel(
    config,
    (_n, shape) => {
      if (shared.length < numel(shape)) shared = new Float32Array(numel(shape));
      return new Tensor(shared.subarray(0, numel(shape)), shape);
    },
    source,
  );
}
