/**
 * Writes a freshly initialised Llama model folder (config.json, model.safetensors, the tokenizer),
 * the starting point that `lora train --full --pack` pretrains into the base model.
 *
 *   node dist/scripts/base-model/init-model.js [--out build/base-init] [--tokenizer assets/base-model]
 *        [--layers 4] [--width 192] [--heads 6] [--kv-heads 6] [--ffn 512] [--context 512] [--seed 0]
 *
 * Init as transformers' Llama: N(0, 0.02²) for every matrix and the embedding, norms at 1. The
 * vocabulary size comes from the tokenizer; the head is tied to the embedding (saves vocab×width).
 */
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { saveModelFolder } from "../../src/io/node/model-folder.js";
import { loadTokenizer } from "../../src/io/node/tokenizer-file.js";
import { parameterReport } from "../../src/lora/inject.js";
import { buildModel, randomParams } from "../../src/models/index.js";

const { values: v } = parseArgs({
  options: {
    out: { type: "string", default: "build/base-init" },
    tokenizer: { type: "string", default: "assets/base-model" },
    layers: { type: "string", default: "4" },
    width: { type: "string", default: "192" },
    heads: { type: "string", default: "6" },
    "kv-heads": { type: "string", default: "6" },
    ffn: { type: "string", default: "512" },
    context: { type: "string", default: "512" },
    seed: { type: "string", default: "0" },
  },
});
const int = (name: keyof typeof v) => {
  const n = Number(v[name]);
  if (!Number.isInteger(n) || n < 0)
    throw new Error(`--${name} must be a non-negative integer, got ${v[name]}`);
  return n;
};

const tokenizer = loadTokenizer(v.tokenizer!);
const config = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  vocab_size: tokenizer.vocabSize,
  hidden_size: int("width"),
  intermediate_size: int("ffn"),
  num_hidden_layers: int("layers"),
  num_attention_heads: int("heads"),
  num_key_value_heads: int("kv-heads"),
  max_position_embeddings: int("context"),
  hidden_act: "silu",
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  rope_scaling: null,
  attention_bias: false,
  mlp_bias: false,
  tie_word_embeddings: true,
  bos_token_id: tokenizer.bosId,
  eos_token_id: tokenizer.eosIds[0],
  pad_token_id: tokenizer.padId,
  initializer_range: 0.02,
  torch_dtype: "float32",
};
const model = buildModel(config, randomParams(int("seed"), 0.02));
mkdirSync(v.out!, { recursive: true });
saveModelFolder(model, v.out!, { config, dtypes: new Map() });
for (const f of ["tokenizer.json", "tokenizer_config.json"])
  copyFileSync(join(v.tokenizer!, f), join(v.out!, f));
console.log(`${v.out}: ${parameterReport(model).total.toLocaleString("en-US")} parameters`);
console.log(JSON.stringify(config));
