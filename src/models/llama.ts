/**
 * The Llama family (model_type "llama", "mistral", "qwen2"), as Hugging Face's LlamaForCausalLM
 * computes it: RMS norm, rotate-half RoPE with rope_theta, grouped-query attention, SwiGLU MLP.
 * Qwen2 adds q/k/v biases. Module paths match the checkpoint: model.layers.{i}.self_attn.q_proj, ...
 */
import { add, attention, mul, reshape, rope, silu } from "../autograd/ops.js";
import type { KVCache } from "../nn/kv-cache.js";
import { Embedding, Linear, type LinearLike, RMSNorm } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import type { Tensor } from "../tensor/tensor.js";
import { type CausalLM, ConfigFields, type ParamFactory } from "./model.js";

export const LLAMA_TYPES = ["llama", "mistral", "qwen2"] as const;
export type LlamaType = (typeof LLAMA_TYPES)[number];

export interface LlamaConfig {
  model_type: LlamaType;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  rms_norm_eps: number;
  rope_theta: number;
  max_position_embeddings: number;
  tie_word_embeddings: boolean;
  attention_bias: boolean;
  mlp_bias: boolean;
}

export function parseLlamaConfig(json: Record<string, unknown>, source = "config.json"): LlamaConfig {
  const f = new ConfigFields(json, source);
  const type = json.model_type as LlamaType;
  const act = json.hidden_act ?? "silu";
  f.require(act === "silu", `hidden_act ${JSON.stringify(act)} is not supported (only silu)`);
  const scaling = json.rope_scaling as { type?: string; rope_type?: string } | null | undefined;
  const scalingType = scaling?.rope_type ?? scaling?.type ?? "default";
  f.require(
    !scaling || scalingType === "default",
    `rope_scaling type ${JSON.stringify(scalingType)} is not supported yet (only plain RoPE)`,
  );
  const heads = f.size("num_attention_heads");
  const hidden = f.size("hidden_size");
  // transformers: head_dim defaults to hidden_size // num_attention_heads
  if (json.head_dim == null) {
    f.require(
      hidden % heads === 0,
      `hidden_size ${hidden} is not divisible by num_attention_heads ${heads}, and no head_dim is given`,
      ["hidden_size", "num_attention_heads"],
    );
  }
  const c: LlamaConfig = {
    model_type: type,
    vocab_size: f.size("vocab_size"),
    hidden_size: hidden,
    intermediate_size: f.size("intermediate_size"),
    num_hidden_layers: f.size("num_hidden_layers"),
    num_attention_heads: heads,
    num_key_value_heads: f.size("num_key_value_heads", heads),
    head_dim: f.size("head_dim", Math.max(1, Math.floor(hidden / heads))),
    rms_norm_eps: f.positive("rms_norm_eps", 1e-6),
    rope_theta: f.positive("rope_theta", 10000),
    max_position_embeddings: f.size("max_position_embeddings", 2048),
    tie_word_embeddings: f.flag("tie_word_embeddings", false),
    attention_bias: f.flag("attention_bias", false) || type === "qwen2",
    mlp_bias: f.flag("mlp_bias", false),
  };
  f.require(
    c.num_attention_heads % c.num_key_value_heads === 0,
    `num_attention_heads ${heads} is not a multiple of num_key_value_heads ${c.num_key_value_heads}`,
    ["num_attention_heads", "num_key_value_heads"],
  );
  f.require(c.head_dim % 2 === 0, `head_dim ${c.head_dim} must be even for RoPE`, [
    "head_dim",
    "hidden_size",
    "num_attention_heads",
  ]);
  f.done();
  return c;
}

const linear = (p: ParamFactory, name: string, inF: number, outF: number, bias: boolean) =>
  new Linear(p(`${name}.weight`, [outF, inF], "weight"), bias ? p(`${name}.bias`, [outF], "bias") : null);

class LlamaAttention extends Module {
  q_proj: LinearLike; // [C] -> [Hq*D]
  k_proj: LinearLike; // [C] -> [Hkv*D]
  v_proj: LinearLike; // [C] -> [Hkv*D]
  o_proj: LinearLike; // [Hq*D] -> [C]

  constructor(
    p: ParamFactory,
    name: string,
    private readonly cfg: LlamaConfig,
    private readonly layer: number,
  ) {
    super();
    const { hidden_size: C, num_attention_heads: Hq, num_key_value_heads: Hkv, head_dim: D } = cfg;
    this.q_proj = linear(p, `${name}.q_proj`, C, Hq * D, cfg.attention_bias);
    this.k_proj = linear(p, `${name}.k_proj`, C, Hkv * D, cfg.attention_bias);
    this.v_proj = linear(p, `${name}.v_proj`, C, Hkv * D, cfg.attention_bias);
    this.o_proj = linear(p, `${name}.o_proj`, Hq * D, C, cfg.model_type !== "qwen2" && cfg.attention_bias);
  }

  // x: [B, T, C] -> [B, T, C]
  forward(x: Tensor, offset: number, cache?: KVCache): Tensor {
    const [B, T] = x.shape as [number, number, number];
    const { num_attention_heads: Hq, num_key_value_heads: Hkv, head_dim: D, rope_theta } = this.cfg;
    const q = rope(reshape(this.q_proj.forward(x), [B, T, Hq, D]), offset, rope_theta);
    let k = rope(reshape(this.k_proj.forward(x), [B, T, Hkv, D]), offset, rope_theta);
    let v = reshape(this.v_proj.forward(x), [B, T, Hkv, D]);
    if (cache) [k, v] = cache.append(this.layer, k, v);
    const y = attention(q, k, v); // [B, T, Hq, D]
    return this.o_proj.forward(reshape(y, [B, T, Hq * D]));
  }
}

class LlamaMLP extends Module {
  gate_proj: LinearLike; // [C] -> [I]
  up_proj: LinearLike; // [C] -> [I]
  down_proj: LinearLike; // [I] -> [C]

  constructor(p: ParamFactory, name: string, cfg: LlamaConfig) {
    super();
    const { hidden_size: C, intermediate_size: I, mlp_bias } = cfg;
    this.gate_proj = linear(p, `${name}.gate_proj`, C, I, mlp_bias);
    this.up_proj = linear(p, `${name}.up_proj`, C, I, mlp_bias);
    this.down_proj = linear(p, `${name}.down_proj`, I, C, mlp_bias);
  }

  // down(silu(gate(x)) * up(x))
  forward(x: Tensor): Tensor {
    return this.down_proj.forward(mul(silu(this.gate_proj.forward(x)), this.up_proj.forward(x)));
  }
}

class LlamaDecoderLayer extends Module {
  input_layernorm: RMSNorm;
  self_attn: LlamaAttention;
  post_attention_layernorm: RMSNorm;
  mlp: LlamaMLP;

  constructor(p: ParamFactory, name: string, cfg: LlamaConfig, layer: number) {
    super();
    const C = cfg.hidden_size;
    this.input_layernorm = new RMSNorm(p(`${name}.input_layernorm.weight`, [C], "norm"), cfg.rms_norm_eps);
    this.self_attn = new LlamaAttention(p, `${name}.self_attn`, cfg, layer);
    this.post_attention_layernorm = new RMSNorm(
      p(`${name}.post_attention_layernorm.weight`, [C], "norm"),
      cfg.rms_norm_eps,
    );
    this.mlp = new LlamaMLP(p, `${name}.mlp`, cfg);
  }

  forward(x: Tensor, offset: number, cache?: KVCache): Tensor {
    x = add(x, this.self_attn.forward(this.input_layernorm.forward(x), offset, cache));
    return add(x, this.mlp.forward(this.post_attention_layernorm.forward(x)));
  }
}

class LlamaModel extends Module {
  embed_tokens: Embedding; // [V, C]
  layers: LlamaDecoderLayer[];
  norm: RMSNorm;

  constructor(p: ParamFactory, cfg: LlamaConfig) {
    super();
    this.embed_tokens = new Embedding(
      p("model.embed_tokens.weight", [cfg.vocab_size, cfg.hidden_size], "embedding"),
    );
    this.layers = Array.from(
      { length: cfg.num_hidden_layers },
      (_, i) => new LlamaDecoderLayer(p, `model.layers.${i}`, cfg, i),
    );
    this.norm = new RMSNorm(p("model.norm.weight", [cfg.hidden_size], "norm"), cfg.rms_norm_eps);
  }
}

export class LlamaForCausalLM extends Module implements CausalLM {
  readonly headName = "lm_head";
  model: LlamaModel;
  lm_head: LinearLike; // [V, C]; shares model.embed_tokens.weight when tie_word_embeddings

  constructor(
    readonly config: LlamaConfig,
    p: ParamFactory,
  ) {
    super();
    this.model = new LlamaModel(p, config);
    this.lm_head = new Linear(
      config.tie_word_embeddings
        ? this.model.embed_tokens.weight
        : p("lm_head.weight", [config.vocab_size, config.hidden_size], "weight"),
    );
  }

  get modelType(): string {
    return this.config.model_type;
  }

  get vocabSize(): number {
    return this.config.vocab_size;
  }

  get numLayers(): number {
    return this.config.num_hidden_layers;
  }

  // ids: [B, T] -> logits: [B, T, V]
  forward(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor {
    return this.head(this.hidden(ids, shape, cache));
  }

  // [..., C] -> logits [..., V]
  head(h: Tensor): Tensor {
    return this.lm_head.forward(h);
  }

  // ids: [B, T] -> hidden states [B, T, C] after the final norm
  hidden(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor {
    const offset = cache?.length ?? 0;
    let x = this.model.embed_tokens.forward(ids, shape); // [B, T, C]
    for (const layer of this.model.layers) x = layer.forward(x, offset, cache);
    cache?.commit();
    return this.model.norm.forward(x);
  }
}

/** Llama checkpoint quirks: a tied head may still be stored (as a copy); rotary caches are not weights. */
export const llamaCheckpoint = {
  names: (param: string): string[] => [param],
  transposed: (_param: string): boolean => false,
  ignored: (name: string): boolean => /rotary_emb\.inv_freq$/.test(name) || name === "lm_head.weight",
};
