/**
 * Phi-3 / Phi-3.5 / Phi-4-mini (model_type "phi3", Phi3ForCausalLM), as transformers' modeling_phi3.py
 * computes them: Llama's layer with fused projections, qkv_proj [q | k | v] and gate_up_proj
 * [gate | up], RMS norms, SiLU; RoPE on the first head_dim · partial_rotary_factor dims (Phi-4-mini:
 * 0.75), usually with LongRoPE scaling (rope.ts); a sliding window when the config sets one. LoRA on
 * qkv_proj is one adapter, as on GPT-2's c_attn; PEFT has no default targets for phi3.
 */
import { add, attention, mul, reshape, rope, silu, slice } from "../autograd/ops.js";
import type { KVCache } from "../nn/kv-cache.js";
import { Embedding, Linear, type LinearLike, RMSNorm } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import type { Tensor } from "../tensor/tensor.js";
import { CausalLMBase, ConfigFields, type ParamFactory } from "./model.js";
import { checkRope, parseRope, type RopeSettings, Rotary, type RotaryPass } from "./rope.js";

export interface Phi3Config {
  model_type: "phi3";
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
  /** 0: full causal attention */
  sliding_window: number;
  tie_word_embeddings: boolean;
}

export function parsePhi3Config(json: Record<string, unknown>, source = "config.json"): Phi3Config {
  const f = new ConfigFields(json, source);
  const act = json.hidden_act ?? "silu";
  f.require(act === "silu", `hidden_act ${JSON.stringify(act)} is not supported (only silu)`);
  // Phi3Config reads the old names "su" and "yarn" as longrope
  const scaling = json.rope_scaling as Record<string, unknown> | null | undefined;
  const legacy = scaling && (scaling.type === "su" || scaling.type === "yarn");
  const rope = parseRope(
    legacy ? { ...json, rope_scaling: { ...scaling, type: "longrope" } } : json,
    10000,
    f.problems,
  );
  const heads = f.size("num_attention_heads");
  const hidden = f.size("hidden_size");
  f.require(
    hidden % heads === 0 || json.head_dim != null,
    `hidden_size ${hidden} is not divisible by num_attention_heads ${heads}`,
    ["hidden_size", "num_attention_heads"],
  );
  const c: Phi3Config = {
    model_type: "phi3",
    vocab_size: f.size("vocab_size"),
    hidden_size: hidden,
    intermediate_size: f.size("intermediate_size"),
    num_hidden_layers: f.size("num_hidden_layers"),
    num_attention_heads: heads,
    num_key_value_heads: f.size("num_key_value_heads", heads),
    head_dim: f.size("head_dim", Math.max(1, Math.floor(hidden / heads))),
    rms_norm_eps: f.positive("rms_norm_eps", 1e-5),
    rope,
    max_position_embeddings: f.size("max_position_embeddings", 4096),
    sliding_window: json.sliding_window == null ? 0 : f.size("sliding_window"),
    tie_word_embeddings: f.flag("tie_word_embeddings", false),
  };
  f.require(
    c.num_attention_heads % c.num_key_value_heads === 0,
    `num_attention_heads ${heads} is not a multiple of num_key_value_heads ${c.num_key_value_heads}`,
    ["num_attention_heads", "num_key_value_heads"],
  );
  checkRope(rope, c.head_dim, true, f.problems);
  f.done();
  return c;
}

const linear = (p: ParamFactory, name: string, inF: number, outF: number) =>
  new Linear(p(`${name}.weight`, [outF, inF], "weight"), null);

class Phi3Attention extends Module {
  qkv_proj: LinearLike; // [C] -> [Hq*D + 2*Hkv*D]: q, then k, then v
  o_proj: LinearLike; // [Hq*D] -> [C]

  constructor(
    p: ParamFactory,
    name: string,
    private readonly cfg: Phi3Config,
    private readonly layer: number,
  ) {
    super();
    const { hidden_size: C, num_attention_heads: Hq, num_key_value_heads: Hkv, head_dim: D } = cfg;
    this.qkv_proj = linear(p, `${name}.qkv_proj`, C, (Hq + 2 * Hkv) * D);
    this.o_proj = linear(p, `${name}.o_proj`, Hq * D, C);
  }

  // x: [B, T, C] -> [B, T, C]
  forward(x: Tensor, offset: number, rot: RotaryPass, cache?: KVCache): Tensor {
    const [B, T] = x.shape as [number, number, number];
    const { num_attention_heads: Hq, num_key_value_heads: Hkv, head_dim: D } = this.cfg;
    const qkv = this.qkv_proj.forward(x); // [B, T, (Hq + 2 Hkv) D]
    const part = (start: number, H: number) => reshape(slice(qkv, start * D, H * D), [B, T, H, D]);
    const q = rope(part(0, Hq), offset, rot.freqs, rot.scale);
    let k = rope(part(Hq, Hkv), offset, rot.freqs, rot.scale);
    let v = part(Hq + Hkv, Hkv);
    if (cache) [k, v] = cache.append(this.layer, k, v);
    const y = attention(q, k, v, { window: this.cfg.sliding_window }); // [B, T, Hq, D]
    return this.o_proj.forward(reshape(y, [B, T, Hq * D]));
  }
}

class Phi3MLP extends Module {
  gate_up_proj: LinearLike; // [C] -> [2I]: gate, then up
  down_proj: LinearLike; // [I] -> [C]

  constructor(
    p: ParamFactory,
    name: string,
    private readonly cfg: Phi3Config,
  ) {
    super();
    const { hidden_size: C, intermediate_size: I } = cfg;
    this.gate_up_proj = linear(p, `${name}.gate_up_proj`, C, 2 * I);
    this.down_proj = linear(p, `${name}.down_proj`, I, C);
  }

  // down(up * silu(gate))
  forward(x: Tensor): Tensor {
    const I = this.cfg.intermediate_size;
    const gu = this.gate_up_proj.forward(x);
    return this.down_proj.forward(mul(slice(gu, I, I), silu(slice(gu, 0, I))));
  }
}

class Phi3DecoderLayer extends Module {
  input_layernorm: RMSNorm;
  self_attn: Phi3Attention;
  post_attention_layernorm: RMSNorm;
  mlp: Phi3MLP;

  constructor(p: ParamFactory, name: string, cfg: Phi3Config, layer: number) {
    super();
    const C = cfg.hidden_size;
    this.input_layernorm = new RMSNorm(p(`${name}.input_layernorm.weight`, [C], "norm"), cfg.rms_norm_eps);
    this.self_attn = new Phi3Attention(p, `${name}.self_attn`, cfg, layer);
    this.post_attention_layernorm = new RMSNorm(
      p(`${name}.post_attention_layernorm.weight`, [C], "norm"),
      cfg.rms_norm_eps,
    );
    this.mlp = new Phi3MLP(p, `${name}.mlp`, cfg);
  }

  forward(x: Tensor, offset: number, rot: RotaryPass, cache?: KVCache): Tensor {
    x = add(x, this.self_attn.forward(this.input_layernorm.forward(x), offset, rot, cache));
    return add(x, this.mlp.forward(this.post_attention_layernorm.forward(x)));
  }
}

class Phi3Model extends Module {
  embed_tokens: Embedding; // [V, C]
  layers: Phi3DecoderLayer[];
  norm: RMSNorm;

  constructor(p: ParamFactory, cfg: Phi3Config) {
    super();
    this.embed_tokens = new Embedding(
      p("model.embed_tokens.weight", [cfg.vocab_size, cfg.hidden_size], "embedding"),
    );
    this.layers = Array.from(
      { length: cfg.num_hidden_layers },
      (_, i) => new Phi3DecoderLayer(p, `model.layers.${i}`, cfg, i),
    );
    this.norm = new RMSNorm(p("model.norm.weight", [cfg.hidden_size], "norm"), cfg.rms_norm_eps);
  }
}

export class Phi3ForCausalLM extends CausalLMBase {
  readonly modelType = "phi3";
  model: Phi3Model;
  lm_head: LinearLike; // [V, C]; shares model.embed_tokens.weight when tied (Phi-4-mini)
  private readonly rotary: Rotary;

  constructor(
    readonly config: Phi3Config,
    p: ParamFactory,
  ) {
    super();
    this.model = new Phi3Model(p, config);
    this.lm_head = new Linear(
      config.tie_word_embeddings
        ? this.model.embed_tokens.weight
        : p("lm_head.weight", [config.vocab_size, config.hidden_size], "weight"),
    );
    this.rotary = new Rotary(config.rope, config.head_dim, config.max_position_embeddings);
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
}
