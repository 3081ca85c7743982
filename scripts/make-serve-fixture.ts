/**
 * Makes test/fixtures/serve: a tiny random Llama (the llama_gqa_tied shape, with the tiny-chat
 * tokenizer's 89 tokens and its chat template) and two LoRA adapters trained on it with the library
 * on visibly different data: "pirate" (q_proj, v_proj) on "arr matey" lines, "robot" (every linear
 * layer of the blocks) on "beep boop" lines, as text and as chat replies.
 *   npx tsc -p . && node dist/scripts/make-serve-fixture.js
 */
import { join, resolve } from "node:path";
import {
  applyLoRA,
  Batcher,
  buildModel,
  createOptimizer,
  type LoraConfig,
  loadModelFolder,
  loadTokenizer,
  Rng,
  randomParams,
  readJson,
  saveAdapter,
  saveModelFolder,
  tokenizeRow,
  train,
} from "../src/node.js";

const root = resolve(import.meta.dirname, "../..");
const out = join(root, "test/fixtures/serve");
const tokDir = join(root, "test/fixtures/tokenizers/tiny-chat");
const config = {
  ...(readJson(join(root, "test/fixtures/models/llama_gqa_tied/config.json")) as Record<string, unknown>),
  vocab_size: 89,
  eos_token_id: 4,
};
saveModelFolder(buildModel(config, randomParams(7, 0.02)), join(out, "model"), {
  config,
  dtypes: new Map(),
  dir: tokDir,
});
const tokenizer = loadTokenizer(join(out, "model"));

async function adapter(name: string, reply: string, targets: string[]): Promise<void> {
  const { model } = loadModelFolder(join(out, "model"));
  const lora: LoraConfig = {
    r: 8,
    lora_alpha: 16,
    lora_dropout: 0,
    target_modules: targets,
    use_rslora: false,
    init_lora_weights: true,
  };
  applyLoRA(model, lora, { rng: new Rng(1) });
  const rows = [
    ...["hello", "hi", "who are you", "say it"].map((q) => ({
      messages: [
        { role: "user", content: q },
        { role: "assistant", content: reply },
      ],
    })),
    ...["once", "then", "and"].map((w) => ({ text: `${w} ${reply} ${reply}` })),
  ].map((r) => tokenizeRow(r, tokenizer, { maskPrompt: false }));
  const optimizer = createOptimizer("adamw", model.trainableParameters(), { lr: 3e-2, weightDecay: 0 });
  await train(model, {
    optimizer,
    data: new Batcher(rows, { batchSize: 7, shuffle: true, seed: 0 }),
    steps: 80,
  });
  saveAdapter(model, join(out, name), lora, "model");
}

await adapter("pirate", "arr matey", ["q_proj", "v_proj"]);
await adapter("robot", "beep boop", [
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
]);
console.log(`wrote ${out}`);
