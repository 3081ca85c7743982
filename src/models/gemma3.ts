/**
 * Gemma 3 text models (model_type "gemma3_text", Gemma3ForCausalLM), as transformers'
 * modeling_gemma3.py computes them:
 * - RMSNorm as x̂·(1 + w), four per layer (input, post-attention, pre- and post-feedforward) and on
 *   q and k per head;
 * - embeddings scaled by √hidden_size, the scale cast to the embedding's dtype first as transformers does;
 * - attention scores scaled by query_pre_attn_scalar^-1/2;
 * - layer_types: "sliding_attention" layers see the last sliding_window keys and use the local RoPE
 *   base (rope_local_base_freq), "full_attention" layers the global one (rope_theta, with its scaling);
 * - a GELU (tanh) gated MLP, a tied head;
 * - final_logit_softcapping when set: logits = cap · tanh(logits / cap).
 * attn_logit_softcapping is read and checked but, as in transformers (4.5x and 5.x), not applied: its
 * Gemma3Attention keeps the field yet never passes it to the attention function (Gemma 2's does; the
 * attention kernels take it as AttentionDims.softcap).
 * Bidirectional attention is refused. Module paths match the checkpoint.
 */
import { add, attention, gelu, mul, reshape, rope, scale } from "../autograd/ops.js";
import type { KVCache } from "../nn/kv-cache.js";
import { Embedding, Linear, type LinearLike, RMSNorm } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../tensor/dtype.js";
import type { Tensor } from "../tensor/tensor.js";
import { CausalLMBase, ConfigFields, type ParamFactory } from "./model.js";
import { checkRope, parseRope, type RopeSettings, Rotary, type RotaryPass } from "./rope.js";

type LayerType = "sliding_attention" | "full_attention";

export interface Gemma3Config {
  model_type: "gemma3_text";
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  rms_norm_eps: number;
  query_pre_attn_scalar: number;
  max_position_embeddings: number;
  sliding_window: number;
  layer_types: LayerType[];
  rope: Record<LayerType, RopeSettings>;
  attention_bias: boolean;
  tie_word_embeddings: boolean;
  /** null: no soft cap. transformers' Gemma 3 does not apply the attention one (see above); neither do we. */
  attn_logit_softcapping: number | null;
  final_logit_softcapping: number | null;
  /** The dtype the checkpoint stores (the embedding scale is rounded to it). */
  dtype: "float32" | "bfloat16" | "float16";
}

export function parseGemma3Config(json: Record<string, unknown>, source = "config.json"): Gemma3Config {
  const f = new ConfigFields(json, source);
  const layers = f.size("num_hidden_layers");
  const act = json.hidden_activation ?? json.hidden_act ?? "gelu_pytorch_tanh";
  f.require(
    act === "gelu_pytorch_tanh",
    `hidden_activation ${JSON.stringify(act)} is not supported (only gelu_pytorch_tanh)`,
  );
  // a soft cap: null (Gemma 3's own setting) or a positive number
  const cap = (key: string) => ((json[key] ?? null) === null ? null : f.positive(key, 1));
  f.require(!f.flag("use_bidirectional_attention"), "use_bidirectional_attention is not supported");
  // layer_types, or transformers' default pattern: every 6th layer full, the rest sliding
  const pattern = f.size("sliding_window_pattern", 6);
  const types = (json.layer_types ??
    Array.from({ length: layers }, (_, i) =>
      (i + 1) % pattern ? "sliding_attention" : "full_attention",
    )) as unknown;
  f.require(
    Array.isArray(types) &&
      types.length === layers &&
      types.every((t) => t === "sliding_attention" || t === "full_attention"),
    `"layer_types" must give "full_attention" or "sliding_attention" for each of the ${layers} layers`,
    ["num_hidden_layers"],
  );
  // rope per layer type: transformers 5 nests rope_parameters by type; 4 had rope_theta (+ rope_scaling)
  // for full layers and rope_local_base_freq for sliding ones
  const nested = (json.rope_parameters ?? {}) as Record<string, unknown>;
  f.require(
    !("rope_theta" in nested || "rope_type" in nested),
    'rope_parameters must be nested by layer type for gemma3_text ({"full_attention": {...}, "sliding_attention": {...}}), as transformers 5 writes it',
  );
  const ropeOf = (t: LayerType, v4: Record<string, unknown>, theta: number) => {
    const e: string[] = [];
    const r = parseRope(
      { ...v4, rope_parameters: nested[t] ?? null, max_position_embeddings: json.max_position_embeddings },
      theta,
      e,
    );
    f.problems.push(...e.map((m) => `${t}: ${m}`));
    return r;
  };
  const rope = {
    full_attention: ropeOf(
      "full_attention",
      { rope_theta: json.rope_theta, rope_scaling: json.rope_scaling },
      1e6,
    ),
    sliding_attention: ropeOf("sliding_attention", { rope_theta: json.rope_local_base_freq }, 1e4),
  };
  const heads = f.size("num_attention_heads");
  const dtype = String(json.dtype ?? json.torch_dtype ?? "float32");
  const c: Gemma3Config = {
    model_type: "gemma3_text",
    vocab_size: f.size("vocab_size"),
    hidden_size: f.size("hidden_size"),
    intermediate_size: f.size("intermediate_size"),
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: f.size("num_key_value_heads", heads),
    head_dim: f.size("head_dim", 256),
    rms_norm_eps: f.positive("rms_norm_eps", 1e-6),
    query_pre_attn_scalar: f.positive("query_pre_attn_scalar", 256),
    max_position_embeddings: f.size("max_position_embeddings", 131072),
    sliding_window: f.size("sliding_window", 4096),
    layer_types: types as LayerType[],
    rope,
    attention_bias: f.flag("attention_bias", false),
    tie_word_embeddings: f.flag("tie_word_embeddings", true),
    attn_logit_softcapping: cap("attn_logit_softcapping"),
    final_logit_softcapping: cap("final_logit_softcapping"),
    dtype: dtype === "bfloat16" || dtype === "float16" ? dtype : "float32",
  };
  f.require(
    c.num_attention_heads % c.num_key_value_heads === 0,
    `num_attention_heads ${heads} is not a multiple of num_key_value_heads ${c.num_key_value_heads}`,
    ["num_attention_heads", "num_key_value_heads"],
  );
  f.require(c.head_dim % 2 === 0, `head_dim ${c.head_dim} must be even for RoPE`, ["head_dim"]);
  for (const r of Object.values(rope)) checkRope(r, c.head_dim, false, f.problems);
  f.done();
  return c;
}

const linear = (p: ParamFactory, name: string, inF: number, outF: number, bias: boolean) =>
  new Linear(p(`${name}.weight`, [outF, inF], "weight"), bias ? p(`${name}.bias`, [outF], "bias") : null);
const norm = (p: ParamFactory, name: string, C: number, eps: number) =>
  new RMSNorm(p(`${name}.weight`, [C], "norm"), eps, 1); // Gemma's x̂·(1 + w)

class Gemma3Attention extends Module {
  q_proj: LinearLike; // [C] -> [Hq*D]
  k_proj: LinearLike; // [C] -> [Hkv*D]
  v_proj: LinearLike; // [C] -> [Hkv*D]
  o_proj: LinearLike; // [Hq*D] -> [C]
  q_norm: RMSNorm; // [D]
  k_norm: RMSNorm; // [D]

  constructor(
    p: ParamFactory,
    name: string,
    private readonly cfg: Gemma3Config,
    private readonly layer: number,
  ) {
    super();
    const { hidden_size: C, num_attention_heads: Hq, num_key_value_heads: Hkv, head_dim: D } = cfg;
    this.q_proj = linear(p, `${name}.q_proj`, C, Hq * D, cfg.attention_bias);
    this.k_proj = linear(p, `${name}.k_proj`, C, Hkv * D, cfg.attention_bias);
    this.v_proj = linear(p, `${name}.v_proj`, C, Hkv * D, cfg.attention_bias);
    this.o_proj = linear(p, `${name}.o_proj`, Hq * D, C, cfg.attention_bias);
    this.q_norm = norm(p, `${name}.q_norm`, D, cfg.rms_norm_eps);
    this.k_norm = norm(p, `${name}.k_norm`, D, cfg.rms_norm_eps);
  }

  // x: [B, T, C] -> [B, T, C]; rot: the rotary embedding of this layer's type
  forward(x: Tensor, offset: number, rot: RotaryPass, cache?: KVCache): Tensor {
    const [B, T] = x.shape as [number, number, number];
    const { num_attention_heads: Hq, num_key_value_heads: Hkv, head_dim: D } = this.cfg;
    const q = rope(
      this.q_norm.forward(reshape(this.q_proj.forward(x), [B, T, Hq, D])),
      offset,
      rot.freqs,
      rot.scale,
    );
    let k = rope(
      this.k_norm.forward(reshape(this.k_proj.forward(x), [B, T, Hkv, D])),
      offset,
      rot.freqs,
      rot.scale,
    );
    let v = reshape(this.v_proj.forward(x), [B, T, Hkv, D]);
    if (cache) [k, v] = cache.append(this.layer, k, v);
    const sliding = this.cfg.layer_types[this.layer] === "sliding_attention";
    const y = attention(q, k, v, {
      scale: this.cfg.query_pre_attn_scalar ** -0.5,
      window: sliding ? this.cfg.sliding_window : 0,
    }); // [B, T, Hq, D]
    return this.o_proj.forward(reshape(y, [B, T, Hq * D]));
  }
}

class Gemma3MLP extends Module {
  gate_proj: LinearLike; // [C] -> [I]
  up_proj: LinearLike; // [C] -> [I]
  down_proj: LinearLike; // [I] -> [C]

  constructor(p: ParamFactory, name: string, cfg: Gemma3Config) {
    super();
    const { hidden_size: C, intermediate_size: I } = cfg;
    this.gate_proj = linear(p, `${name}.gate_proj`, C, I, false);
    this.up_proj = linear(p, `${name}.up_proj`, C, I, false);
    this.down_proj = linear(p, `${name}.down_proj`, I, C, false);
  }

  // down(gelu_tanh(gate(x)) * up(x))
  forward(x: Tensor): Tensor {
    return this.down_proj.forward(mul(gelu(this.gate_proj.forward(x)), this.up_proj.forward(x)));
  }
}

class Gemma3DecoderLayer extends Module {
  input_layernorm: RMSNorm;
  self_attn: Gemma3Attention;
  post_attention_layernorm: RMSNorm;
  pre_feedforward_layernorm: RMSNorm;
  mlp: Gemma3MLP;
  post_feedforward_layernorm: RMSNorm;

  constructor(p: ParamFactory, name: string, cfg: Gemma3Config, layer: number) {
    super();
    const C = cfg.hidden_size;
    const eps = cfg.rms_norm_eps;
    this.input_layernorm = norm(p, `${name}.input_layernorm`, C, eps);
    this.self_attn = new Gemma3Attention(p, `${name}.self_attn`, cfg, layer);
    this.post_attention_layernorm = norm(p, `${name}.post_attention_layernorm`, C, eps);
    this.pre_feedforward_layernorm = norm(p, `${name}.pre_feedforward_layernorm`, C, eps);
    this.mlp = new Gemma3MLP(p, `${name}.mlp`, cfg);
    this.post_feedforward_layernorm = norm(p, `${name}.post_feedforward_layernorm`, C, eps);
  }

  forward(x: Tensor, offset: number, rot: RotaryPass, cache?: KVCache): Tensor {
    const a = this.self_attn.forward(this.input_layernorm.forward(x), offset, rot, cache);
    x = add(x, this.post_attention_layernorm.forward(a));
    const m = this.mlp.forward(this.pre_feedforward_layernorm.forward(x));
    return add(x, this.post_feedforward_layernorm.forward(m));
  }
}

/** Gemma3TextModel: embeddings (scaled), the layers and the final norm; `prefix` is its module path. */
export class Gemma3TextModel extends Module {
  embed_tokens: Embedding; // [V, C]
  layers: Gemma3DecoderLayer[];
  norm: RMSNorm;
  private readonly rotary: Record<LayerType, Rotary>;
  /** √hidden_size in the checkpoint's dtype, as transformers' embed_scale.to(weight.dtype). */
  private readonly embedScale: number;

  constructor(
    p: ParamFactory,
    private readonly cfg: Gemma3Config,
    prefix = "model",
  ) {
    super();
    this.embed_tokens = new Embedding(
      p(`${prefix}.embed_tokens.weight`, [cfg.vocab_size, cfg.hidden_size], "embedding"),
    );
    this.layers = Array.from(
      { length: cfg.num_hidden_layers },
      (_, i) => new Gemma3DecoderLayer(p, `${prefix}.layers.${i}`, cfg, i),
    );
    this.norm = norm(p, `${prefix}.norm`, cfg.hidden_size, cfg.rms_norm_eps);
    const { head_dim: D, max_position_embeddings: max } = cfg;
    this.rotary = {
      full_attention: new Rotary(cfg.rope.full_attention, D, max),
      sliding_attention: new Rotary(cfg.rope.sliding_attention, D, max),
    };
    const s = Math.sqrt(cfg.hidden_size);
    this.embedScale =
      cfg.dtype === "bfloat16"
        ? bf16ToF32(f32ToBf16(s))
        : cfg.dtype === "float16"
          ? f16ToF32(f32ToF16(s))
          : Math.fround(s);
  }

  // ids: [B, T] -> hidden states [B, T, C] after the final norm
  forward(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor {
    const offset = cache?.length ?? 0;
    const len = offset + shape[1];
    const rot = {
      full_attention: this.rotary.full_attention.pass(len),
      sliding_attention: this.rotary.sliding_attention.pass(len),
    };
    let x = scale(this.embed_tokens.forward(ids, shape), this.embedScale); // [B, T, C]
    this.layers.forEach((layer, i) => {
      x = layer.forward(x, offset, rot[this.cfg.layer_types[i]!], cache);
    });
    cache?.commit();
    return this.norm.forward(x);
  }
}

export class Gemma3ForCausalLM extends CausalLMBase {
  readonly modelType = "gemma3_text";
  model: Gemma3TextModel;
  lm_head: LinearLike; // [V, C]; shares model.embed_tokens.weight when tied
  override readonly logitSoftcap: number | undefined;

  constructor(
    readonly config: Gemma3Config,
    p: ParamFactory,
  ) {
    super();
    this.model = new Gemma3TextModel(p, config);
    this.lm_head = new Linear(
      config.tie_word_embeddings
        ? this.model.embed_tokens.weight
        : p("lm_head.weight", [config.vocab_size, config.hidden_size], "weight"),
    );
    this.logitSoftcap = config.final_logit_softcapping ?? undefined;
  }

  get vocabSize(): number {
    return this.config.vocab_size;
  }

  get numLayers(): number {
    return this.config.num_hidden_layers;
  }

  // ids: [B, T] -> hidden states [B, T, C] after the final norm
  hidden(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor {
    return this.model.forward(ids, shape, cache);
  }
}
