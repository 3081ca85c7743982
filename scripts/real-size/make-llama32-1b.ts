/**
 * Writes a randomly initialised model folder of Llama-3.2-1B's exact shape and config (bf16, tied head,
 * llama3 RoPE scaling), for measuring what a real-size model costs here: no real weights exist offline.
 * The weights are N(0, 0.02²) bf16, written tensor by tensor (never the whole file in memory).
 *
 *   node dist/scripts/real-size/make-llama32-1b.js OUT_DIR
 *   node dist/scripts/real-size/load-peak.js OUT_DIR        # peak RSS of loading it, against its size
 */
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { f32ToBf16 } from "../../src/tensor/dtype.js";
import { Rng } from "../../src/tensor/random.js";

const out = process.argv[2];
if (!out) throw new Error("usage: make-llama32-1b.js OUT_DIR");

// meta-llama/Llama-3.2-1B's config.json (transformers 4 spelling, as the hub has it)
const config = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  bos_token_id: 128000,
  eos_token_id: 128001,
  head_dim: 64,
  hidden_act: "silu",
  hidden_size: 2048,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: {
    factor: 32.0,
    high_freq_factor: 4.0,
    low_freq_factor: 1.0,
    original_max_position_embeddings: 8192,
    rope_type: "llama3",
  },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  vocab_size: 128256,
};

const C = config.hidden_size;
const I = config.intermediate_size;
const kv = config.num_key_value_heads * config.head_dim;
const tensors: [string, number[]][] = [["model.embed_tokens.weight", [config.vocab_size, C]]];
for (let l = 0; l < config.num_hidden_layers; l++) {
  const p = `model.layers.${l}`;
  tensors.push(
    [`${p}.input_layernorm.weight`, [C]],
    [`${p}.self_attn.q_proj.weight`, [C, C]],
    [`${p}.self_attn.k_proj.weight`, [kv, C]],
    [`${p}.self_attn.v_proj.weight`, [kv, C]],
    [`${p}.self_attn.o_proj.weight`, [C, C]],
    [`${p}.post_attention_layernorm.weight`, [C]],
    [`${p}.mlp.gate_proj.weight`, [I, C]],
    [`${p}.mlp.up_proj.weight`, [I, C]],
    [`${p}.mlp.down_proj.weight`, [C, I]],
  );
}
tensors.push(["model.norm.weight", [C]]);

const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
let offset = 0;
for (const [name, shape] of tensors) {
  const bytes = shape.reduce((a, b) => a * b, 1) * 2;
  header[name] = { dtype: "BF16", shape, data_offsets: [offset, offset + bytes] };
  offset += bytes;
}
let json = JSON.stringify(header);
json += " ".repeat((8 - (json.length % 8)) % 8);

mkdirSync(out, { recursive: true });
writeFileSync(join(out, "config.json"), `${JSON.stringify(config, null, 2)}\n`);
const fd = openSync(join(out, "model.safetensors"), "w");
const len = Buffer.alloc(8);
len.writeBigUInt64LE(BigInt(json.length));
writeSync(fd, len);
writeSync(fd, json);
const rng = new Rng(0);
const chunk = new Uint16Array(1 << 20);
for (const [name, shape] of tensors) {
  let n = shape.reduce((a, b) => a * b, 1);
  const norm = name.endsWith("norm.weight");
  while (n > 0) {
    const m = Math.min(n, chunk.length);
    for (let i = 0; i < m; i++) chunk[i] = f32ToBf16(norm ? 1 : 0.02 * rng.normal());
    writeSync(fd, new Uint8Array(chunk.buffer, 0, m * 2));
    n -= m;
  }
}
closeSync(fd);
console.log(`wrote ${out}: ${tensors.length} tensors, ${(offset / 2 ** 30).toFixed(2)} GiB of bf16 weights`);
