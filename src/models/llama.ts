/**
 * The Llama family (model_type "llama", "mistral", "qwen2", "qwen3", "smollm3"), as Hugging Face's
 * LlamaForCausalLM computes it: RMS norm, rotate-half RoPE (with Llama 3's, linear or dynamic scaling:
 * rope.ts), grouped-query attention, SwiGLU MLP. The members differ by flags:
 * - qwen2: q/k/v biases (o_proj has none);
 * - qwen3: q_norm / k_norm, an RMSNorm over head_dim on each head of q and k before RoPE;
 * - smollm3: no_rope_layers[i] = 0 makes layer i a NoPE layer (no rotary embedding).
 * Module paths match the checkpoint: model.layers.{i}.self_attn.q_proj, ...
 */
import { add, attention, mul, reshape, rope, silu } from "../autograd/ops.js";
import type { KVCache } from "../nn/kv-cache.js";
import { Embedding, Linear, type LinearLike, RMSNorm } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import type { Tensor } from "../tensor/tensor.js";
import { CausalLMBase, ConfigFields, type ParamFactory } from "./model.js";
import { checkRope, parseRope, type RopeSettings, Rotary, type RotaryPass } from "./rope.js";
import { RowCaches } from "./rows.js";

export const LLAMA_TYPES = ["llama", "mistral", "qwen2", "qwen3", "smollm3"] as const;
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
  rope: RopeSettings;
  max_position_embeddings: number;
  /** qwen3: RMSNorm of q and k over head_dim, per head, before RoPE. */
  qk_norm: boolean;
  /** smollm3: 1 where a layer uses RoPE, 0 for a NoPE layer (null: every layer uses it). */
  no_rope_layers: number[] | null;
  /** Each layer's sliding window (0: full attention). */
  layer_windows: number[];
  tie_word_embeddings: boolean;
  attention_bias: boolean;
  mlp_bias: boolean;
}

export function parseLlamaConfig(json: Record<string, unknown>, source = "config.json"): LlamaConfig {
  const f = new ConfigFields(json, source);
  const type = json.model_type as LlamaType;
  const act = json.hidden_act ?? "silu";
  f.require(act === "silu", `hidden_act ${JSON.stringify(act)} is not supported (only silu)`);
  const rope = parseRope(json, type === "smollm3" ? 2e6 : 10000, f.problems);
  const layers = f.size("num_hidden_layers");
  const noRope = json.no_rope_layers;
  f.require(
    noRope === undefined ||
      noRope === null ||
      (Array.isArray(noRope) && noRope.length === layers && noRope.every((x) => x === 0 || x === 1)),
    `"no_rope_layers" must list 0 or 1 for each of the ${layers} layers, got ${JSON.stringify(noRope)}`,
    ["num_hidden_layers"],
  );
  const windows = layerWindows(json, type, layers, f.problems);
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
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: f.size("num_key_value_heads", heads),
    head_dim: f.size("head_dim", Math.max(1, Math.floor(hidden / heads))),
    rms_norm_eps: f.positive("rms_norm_eps", 1e-6),
    rope,
    max_position_embeddings: f.size("max_position_embeddings", 2048),
    tie_word_embeddings: f.flag("tie_word_embeddings", false),
    attention_bias: f.flag("attention_bias", false) || type === "qwen2",
    mlp_bias: f.flag("mlp_bias", false),
    qk_norm: type === "qwen3",
    no_rope_layers: type === "smollm3" && Array.isArray(noRope) ? (noRope as number[]) : null,
    layer_windows: windows,
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
  if (c.head_dim % 2 === 0) checkRope(rope, c.head_dim, false, f.problems);
  f.done();
  return c;
}

/**
 * Each layer's sliding window, as transformers decides it: Mistral's `sliding_window` applies to every
 * layer; Qwen2/Qwen3/SmolLM3 use it only with use_sliding_window, on the layers that `layer_types` marks
 * "sliding_attention" (else, as Qwen2 derives them, from max_window_layers on).
 */
function layerWindows(
  json: Record<string, unknown>,
  type: LlamaType,
  layers: number,
  errors: string[],
): number[] {
  const w = json.sliding_window;
  const none = new Array<number>(layers).fill(0);
  if (w === undefined || w === null) return none;
  if (typeof w !== "number" || !Number.isInteger(w) || w < 1) {
    errors.push(`"sliding_window" must be a positive integer or null, got ${JSON.stringify(w)}`);
    return none;
  }
  if (type === "mistral") return none.fill(w);
  if (json.use_sliding_window !== true) return none;
  const types = json.layer_types;
  if (types !== undefined) {
    if (
      !Array.isArray(types) ||
      types.length !== layers ||
      types.some((t) => t !== "sliding_attention" && t !== "full_attention")
    ) {
      errors.push(
        `"layer_types" must give "full_attention" or "sliding_attention" for each of the ${layers} layers`,
      );
      return none;
    }
    return types.map((t) => (t === "sliding_attention" ? w : 0));
  }
  // transformers' Qwen2/Qwen3 default: sliding from layer 28 on
  const from = typeof json.max_window_layers === "number" ? json.max_window_layers : 28;
  return none.map((_, i) => (i >= from ? w : 0));
}

const linear = (p: ParamFactory, name: string, inF: number, outF: number, bias: boolean) =>
  new Linear(p(`${name}.weight`, [outF, inF], "weight"), bias ? p(`${name}.bias`, [outF], "bias") : null);

class LlamaAttention extends Module {
  q_proj: LinearLike; // [C] -> [Hq*D]
  k_proj: LinearLike; // [C] -> [Hkv*D]
  v_proj: LinearLike; // [C] -> [Hkv*D]
  o_proj: LinearLike; // [Hq*D] -> [C]
  q_norm?: RMSNorm; // qwen3: [D]
  k_norm?: RMSNorm; // qwen3: [D]
  private readonly usesRope: boolean;

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
    if (cfg.qk_norm) {
      this.q_norm = new RMSNorm(p(`${name}.q_norm.weight`, [D], "norm"), cfg.rms_norm_eps);
      this.k_norm = new RMSNorm(p(`${name}.k_norm.weight`, [D], "norm"), cfg.rms_norm_eps);
    }
    this.usesRope = cfg.no_rope_layers?.[layer] !== 0;
  }

  // x: [B, T, C] -> [B, T, C]; rot: this pass's rotary frequencies and cos/sin factor. With RowCaches
  // (a batched step, T = 1: x [rows, 1, C]), each row has its own position and rotary pass, and each
  // sequence its cache.
  forward(x: Tensor, offset: number, rot: RotaryPass, cache?: KVCache | RowCaches): Tensor {
    const [B, T] = x.shape as [number, number, number];
    const { num_attention_heads: Hq, num_key_value_heads: Hkv, head_dim: D } = this.cfg;
    const rows = cache instanceof RowCaches ? cache : null;
    const heads = (t: Tensor, H: number, norm?: RMSNorm) => {
      const h = reshape(t, [B, T, H, D]);
      const n = norm ? norm.forward(h) : h;
      if (!this.usesRope) return n;
      return rows ? rows.rope(n) : rope(n, offset, rot.freqs, rot.scale);
    };
    const q = heads(this.q_proj.forward(x), Hq, this.q_norm);
    let k = heads(this.k_proj.forward(x), Hkv, this.k_norm);
    let v = reshape(this.v_proj.forward(x), [B, T, Hkv, D]);
    const opts = { window: this.cfg.layer_windows[this.layer] };
    let y: Tensor; // [B, T, Hq, D]
    if (rows) y = rows.attend(this.layer, q, k, v, opts);
    else {
      if (cache) [k, v] = (cache as KVCache).append(this.layer, k, v);
      y = attention(q, k, v, opts);
    }
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

  forward(x: Tensor, offset: number, rot: RotaryPass, cache?: KVCache | RowCaches): Tensor {
    x = add(x, this.self_attn.forward(this.input_layernorm.forward(x), offset, rot, cache));
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

export class LlamaForCausalLM extends CausalLMBase {
  model: LlamaModel;
  lm_head: LinearLike; // [V, C]; shares model.embed_tokens.weight when tie_word_embeddings
  private readonly rotary: Rotary; // one per model, as transformers' rotary_emb (dynamic RoPE has state)

  constructor(
    readonly config: LlamaConfig,
    p: ParamFactory,
  ) {
    super();
    this.model = new LlamaModel(p, config);
    this.rotary = new Rotary(config.rope, config.head_dim, config.max_position_embeddings);
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

  // ids: [B, T] -> hidden states [B, T, C] after the final norm
  hidden(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor {
    const offset = cache?.length ?? 0;
    const rot = this.rotary.pass(offset + shape[1]);
    let x = this.model.embed_tokens.forward(ids, shape); // [B, T, C]
    for (const layer of this.model.layers) x = layer.forward(x, offset, rot, cache);
    cache?.commit();
    return this.model.norm.forward(x);
  }

  // ids: the next lengths[b] (default 1) tokens of each of B sequences, each with its own cache ->
  // logits [B, 1, V] of each sequence's last token
  decodeRows(ids: Int32Array, caches: readonly KVCache[], lengths?: readonly number[]): Tensor {
    const T = (b: number) => lengths?.[b] ?? 1;
    const rows = new RowCaches(
      caches,
      caches.map((c, b) => this.rotary.pass(c.length + T(b))),
      lengths,
    );
    let x = this.model.embed_tokens.forward(ids, [ids.length, 1]); // [rows, 1, C]
    const unused = rows.rots[0]!;
    for (const layer of this.model.layers) x = layer.forward(x, 0, unused, rows);
    rows.commit();
    // the head on every row, then each sequence's last: an adapter on the head has one per row too
    return rows.lastRows(this.head(this.model.norm.forward(x)));
  }
}

/** Llama checkpoint quirks: a tied head may still be stored (as a copy); rotary caches are not weights. */
export const llamaCheckpoint = {
  names: (param: string): string[] => [param],
  transposed: (_param: string): boolean => false,
  ignored: (name: string): boolean => /rotary_emb\.inv_freq$/.test(name) || name === "lm_head.weight",
};
