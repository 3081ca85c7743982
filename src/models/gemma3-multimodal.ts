/**
 * The text part of a multimodal Gemma 3 folder (model_type "gemma3", Gemma3ForConditionalGeneration):
 * the Gemma 3 text model of its text_config, run on text alone, as transformers runs it when no image
 * token is in the input. The vision tower and the projector are not built (their tensors stay unused).
 *
 * Module paths are those of transformers 5's Gemma3ForConditionalGeneration (model.language_model.*,
 * lm_head), which PEFT names adapters after; the checkpoint is read in either layout: transformers 4's
 * (language_model.model.*, language_model.lm_head.*), which transformers 5 still writes, or the module
 * paths themselves. As in transformers (4.5x and 5.x), Gemma3ForConditionalGeneration applies no final
 * logit soft cap (its Gemma3ForCausalLM does).
 */
import type { KVCache } from "../nn/kv-cache.js";
import { Linear, type LinearLike } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import type { Tensor } from "../tensor/tensor.js";
import { type Gemma3Config, Gemma3TextModel, parseGemma3Config } from "./gemma3.js";
import { CausalLMBase, ConfigFields, type ParamFactory } from "./model.js";

export interface Gemma3MultimodalConfig {
  model_type: "gemma3";
  text_config: Gemma3Config;
  tie_word_embeddings: boolean;
}

/** Gemma3TextConfig's defaults for the sizes a multimodal config's text_config may leave out. */
const TEXT_DEFAULTS = {
  vocab_size: 262208,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
};

export function parseGemma3MultimodalConfig(
  json: Record<string, unknown>,
  source = "config.json",
): Gemma3MultimodalConfig {
  const f = new ConfigFields(json, source);
  const text = json.text_config;
  f.require(
    typeof text === "object" && text !== null && !Array.isArray(text),
    '"text_config" must be an object (the text model\'s config), as Gemma3Config writes it',
  );
  const tie = f.flag("tie_word_embeddings", true);
  f.done();
  const t = text as Record<string, unknown>;
  const dtype = t.dtype ?? t.torch_dtype ?? json.dtype ?? json.torch_dtype;
  return {
    model_type: "gemma3",
    text_config: parseGemma3Config(
      { ...TEXT_DEFAULTS, ...t, dtype, tie_word_embeddings: tie },
      `${source} (text_config)`,
    ),
    tie_word_embeddings: tie,
  };
}

/** Gemma3Model without its vision tower and projector: only the language model. */
class Gemma3Model extends Module {
  language_model: Gemma3TextModel;

  constructor(p: ParamFactory, cfg: Gemma3Config) {
    super();
    this.language_model = new Gemma3TextModel(p, cfg, "model.language_model");
  }
}

export class Gemma3ForConditionalGeneration extends CausalLMBase {
  readonly modelType = "gemma3";
  readonly adapterScope = "model.language_model";
  model: Gemma3Model;
  lm_head: LinearLike; // [V, C]; shares model.language_model.embed_tokens.weight when tied

  constructor(
    readonly config: Gemma3MultimodalConfig,
    p: ParamFactory,
  ) {
    super();
    const c = config.text_config;
    this.model = new Gemma3Model(p, c);
    this.lm_head = new Linear(
      config.tie_word_embeddings
        ? this.model.language_model.embed_tokens.weight
        : p("lm_head.weight", [c.vocab_size, c.hidden_size], "weight"),
    );
  }

  get vocabSize(): number {
    return this.config.text_config.vocab_size;
  }

  get numLayers(): number {
    return this.config.text_config.num_hidden_layers;
  }

  // ids: [B, T] -> hidden states [B, T, C] after the final norm
  hidden(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor {
    return this.model.language_model.forward(ids, shape, cache);
  }
}

/** The other towers of the checkpoint, which the text model leaves unused. */
export const GEMMA3_TOWERS = [
  { pattern: /^(model\.)?vision_tower\./, what: "vision tower" },
  { pattern: /^(model\.)?multi_modal_projector\./, what: "multimodal projector" },
];

/** Checkpoint names: transformers 4's layout first (what save_pretrained writes), then the module path. */
export const gemma3MultimodalCheckpoint = {
  names: (param: string): string[] => {
    const text = /^model\.language_model\.(.*)$/.exec(param);
    if (text) return [`language_model.model.${text[1]}`, param];
    if (param === "lm_head.weight") return ["language_model.lm_head.weight", param];
    return [param];
  },
  transposed: (_param: string): boolean => false,
  ignored: (name: string): boolean =>
    /rotary_emb\.inv_freq$/.test(name) ||
    name === "lm_head.weight" ||
    name === "language_model.lm_head.weight",
};
