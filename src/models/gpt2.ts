/**
 * GPT-2 (model_type "gpt2"), as Hugging Face's GPT2LMHeadModel computes it.
 * Module paths match the checkpoint: transformer.h.{i}.attn.c_attn, ... lm_head (tied to wte).
 * Checkpoints store Conv1D weights [in, out]; gpt2Checkpoint transposes them to Linear's [out, in].
 */
import { add, attention, gelu, reshape, slice } from "../autograd/ops.js";
import type { KVCache } from "../nn/kv-cache.js";
import { Embedding, LayerNorm, Linear, type LinearLike } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import type { Tensor } from "../tensor/tensor.js";
import { CausalLMBase, ConfigFields, type ParamFactory } from "./model.js";
import { RowCaches } from "./rows.js";

export interface GPT2Config {
  model_type: "gpt2";
  vocab_size: number;
  n_positions: number;
  n_embd: number;
  n_layer: number;
  n_head: number;
  layer_norm_epsilon: number;
  /** The head shares wte's weight (the default); a merged folder may untie it (lm_head.weight). */
  tie_word_embeddings: boolean;
}

export function parseGPT2Config(json: Record<string, unknown>, source = "config.json"): GPT2Config {
  const f = new ConfigFields(json, source);
  const act = json.activation_function ?? "gelu_new";
  f.require(
    act === "gelu_new" || act === "gelu_pytorch_tanh",
    `GPT-2 activation_function ${JSON.stringify(act)} is not supported (use gelu_new)`,
  );
  const c: GPT2Config = {
    model_type: "gpt2",
    vocab_size: f.size("vocab_size"),
    n_positions: f.size("n_positions", 1024),
    n_embd: f.size("n_embd"),
    n_layer: f.size("n_layer"),
    n_head: f.size("n_head"),
    layer_norm_epsilon: f.positive("layer_norm_epsilon", 1e-5),
    tie_word_embeddings: f.flag("tie_word_embeddings", true),
  };
  f.require(c.n_embd % c.n_head === 0, `n_embd ${c.n_embd} is not divisible by n_head ${c.n_head}`, [
    "n_embd",
    "n_head",
  ]);
  f.done();
  return c;
}

const linear = (p: ParamFactory, name: string, inF: number, outF: number) =>
  new Linear(p(`${name}.weight`, [outF, inF], "weight"), p(`${name}.bias`, [outF], "bias"));
const layerNorm = (p: ParamFactory, name: string, C: number, eps: number) =>
  new LayerNorm(p(`${name}.weight`, [C], "norm"), p(`${name}.bias`, [C], "bias"), eps);

class GPT2Attention extends Module {
  c_attn: LinearLike; // [C] -> [3C]
  c_proj: LinearLike; // [C] -> [C]

  constructor(
    p: ParamFactory,
    name: string,
    private readonly cfg: GPT2Config,
    private readonly layer: number,
  ) {
    super();
    const C = cfg.n_embd;
    this.c_attn = linear(p, `${name}.c_attn`, C, 3 * C);
    this.c_proj = linear(p, `${name}.c_proj`, C, C);
  }

  // x: [B, T, C] -> [B, T, C]
  // With RowCaches (a batched step, T = 1: x [rows, 1, C]), each sequence attends over its own cache.
  forward(x: Tensor, cache?: KVCache | RowCaches): Tensor {
    const [B, T, C] = x.shape as [number, number, number];
    const H = this.cfg.n_head;
    const qkv = this.c_attn.forward(x); // [B, T, 3C]
    const heads = (i: number) => reshape(slice(qkv, i * C, C), [B, T, H, C / H]);
    let [q, k, v] = [heads(0), heads(1), heads(2)];
    let y: Tensor; // [B, T, H, D]
    if (cache instanceof RowCaches) y = cache.attend(this.layer, q, k, v);
    else {
      if (cache) [k, v] = cache.append(this.layer, k, v);
      y = attention(q, k, v);
    }
    return this.c_proj.forward(reshape(y, [B, T, C]));
  }
}

class GPT2MLP extends Module {
  c_fc: LinearLike; // [C] -> [4C]
  c_proj: LinearLike; // [4C] -> [C]

  constructor(p: ParamFactory, name: string, C: number) {
    super();
    this.c_fc = linear(p, `${name}.c_fc`, C, 4 * C);
    this.c_proj = linear(p, `${name}.c_proj`, 4 * C, C);
  }

  forward(x: Tensor): Tensor {
    return this.c_proj.forward(gelu(this.c_fc.forward(x)));
  }
}

class GPT2Block extends Module {
  ln_1: LayerNorm;
  attn: GPT2Attention;
  ln_2: LayerNorm;
  mlp: GPT2MLP;

  constructor(p: ParamFactory, name: string, cfg: GPT2Config, layer: number) {
    super();
    const C = cfg.n_embd;
    this.ln_1 = layerNorm(p, `${name}.ln_1`, C, cfg.layer_norm_epsilon);
    this.attn = new GPT2Attention(p, `${name}.attn`, cfg, layer);
    this.ln_2 = layerNorm(p, `${name}.ln_2`, C, cfg.layer_norm_epsilon);
    this.mlp = new GPT2MLP(p, `${name}.mlp`, C);
  }

  forward(x: Tensor, cache?: KVCache | RowCaches): Tensor {
    x = add(x, this.attn.forward(this.ln_1.forward(x), cache));
    return add(x, this.mlp.forward(this.ln_2.forward(x)));
  }
}

class GPT2Model extends Module {
  wte: Embedding; // [V, C]
  wpe: Embedding; // [n_positions, C]
  h: GPT2Block[];
  ln_f: LayerNorm;

  constructor(p: ParamFactory, cfg: GPT2Config) {
    super();
    const C = cfg.n_embd;
    this.wte = new Embedding(p("transformer.wte.weight", [cfg.vocab_size, C], "embedding"));
    this.wpe = new Embedding(p("transformer.wpe.weight", [cfg.n_positions, C], "embedding"));
    this.h = Array.from({ length: cfg.n_layer }, (_, i) => new GPT2Block(p, `transformer.h.${i}`, cfg, i));
    this.ln_f = layerNorm(p, "transformer.ln_f", C, cfg.layer_norm_epsilon);
  }
}

export class GPT2LMHeadModel extends CausalLMBase {
  readonly modelType = "gpt2";
  transformer: GPT2Model;
  lm_head: LinearLike; // [V, C]; shares transformer.wte.weight unless tie_word_embeddings is false

  constructor(
    readonly config: GPT2Config,
    p: ParamFactory,
  ) {
    super();
    this.transformer = new GPT2Model(p, config);
    this.lm_head = new Linear(
      config.tie_word_embeddings
        ? this.transformer.wte.weight
        : p("lm_head.weight", [config.vocab_size, config.n_embd], "weight"),
    );
  }

  get vocabSize(): number {
    return this.config.vocab_size;
  }

  get numLayers(): number {
    return this.config.n_layer;
  }

  // ids: [B, T] -> hidden states [B, T, C] after ln_f
  hidden(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor {
    const [B, T] = shape;
    const past = cache?.length ?? 0;
    if (past + T > this.config.n_positions) {
      throw new RangeError(`GPT-2: ${past + T} positions exceed n_positions ${this.config.n_positions}`);
    }
    const pos = new Int32Array(B * T).map((_, i) => past + (i % T));
    const t = this.transformer;
    let x = add(t.wte.forward(ids, shape), t.wpe.forward(pos, shape)); // [B, T, C]
    for (const block of t.h) x = block.forward(x, cache);
    cache?.commit();
    return t.ln_f.forward(x);
  }

  // ids: the next lengths[b] (default 1) tokens of each of B sequences, each with its own cache ->
  // logits [B, 1, V] of each sequence's last token
  decodeRows(ids: Int32Array, caches: readonly KVCache[], lengths?: readonly number[]): Tensor {
    const rows = new RowCaches(caches, [], lengths);
    const positions = rows.positions;
    const over = positions.find((p) => p + 1 > this.config.n_positions);
    if (over !== undefined)
      throw new RangeError(`GPT-2: ${over + 1} positions exceed n_positions ${this.config.n_positions}`);
    const t = this.transformer;
    const N = ids.length;
    let x = add(t.wte.forward(ids, [N, 1]), t.wpe.forward(Int32Array.from(positions), [N, 1])); // [rows, 1, C]
    for (const block of t.h) x = block.forward(x, rows);
    rows.commit();
    // the head on every row, then each sequence's last: an adapter on the head has one per row too
    return rows.lastRows(this.head(t.ln_f.forward(x)));
  }
}

/** GPT-2 checkpoint quirks: optional "transformer." prefix, Conv1D [in, out] weights, mask buffers. */
export const gpt2Checkpoint = {
  /** Checkpoint names to try for a parameter name, in order. */
  names(param: string): string[] {
    return param.startsWith("transformer.") ? [param, param.slice("transformer.".length)] : [param];
  },
  /** Conv1D layers store [in, out]; our Linear wants [out, in]. */
  transposed(param: string): boolean {
    return /\.(c_attn|c_proj|c_fc)\.weight$/.test(param);
  },
  /** Buffers of old checkpoints that are not weights. */
  ignored(name: string): boolean {
    return /\.attn\.(bias|masked_bias)$/.test(name) || name === "lm_head.weight";
  },
};
