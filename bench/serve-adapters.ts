/**
 * The model and adapters of `npm run bench:serve` and scripts/serve-step-profile.ts: stories260K
 * (../shared/data; else the tiny serve fixture) and three random adapters, rank 8 on every linear
 * layer of the blocks unless told (`--targets`), with non-zero B so each changes the output. `--width W` widens the model (see
 * widenedModel): stories260K is 64 wide, where a rank-8 term on every linear layer is a quarter of the
 * base products' work, far from the r << d a served adapter has.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import {
  applyLoRA,
  buildModel,
  type LoraConfig,
  loadModelFolder,
  loraLayers,
  Rng,
  randomParams,
  saveAdapter,
  saveModelFolder,
  Tensor,
} from "../src/node.js";

export const BENCH_ADAPTERS = ["a1", "a2", "a3"];

/**
 * stories260K's architecture and tokenizer at hidden size `width` (heads of width / 8, its 2.6875x MLP,
 * 5 layers), random weights (seed 0), written as a model folder in `dir`: a model as wide as a small
 * served one, where rank 8 is r << d, with no download.
 */
export function widenedModel(modelDir: string, width: number, dir: string): string {
  if (!Number.isInteger(width) || width < 8 || width % 8 !== 0)
    throw new Error(`--width ${width}: give a multiple of 8 (the model's 8 heads)`);
  const { config } = loadModelFolder(modelDir);
  const wide = {
    ...config,
    hidden_size: width,
    intermediate_size: Math.round((width * 172) / 64 / 8) * 8,
    head_dim: width / 8,
  };
  const out = join(dir, `width-${width}`);
  saveModelFolder(buildModel(wide, randomParams(0)), out, { config: wide, dtypes: new Map(), dir: modelDir });
  return out;
}

/** stories260K beside the checkout, else the tiny serve fixture. */
export function benchModelDir(root: string): string {
  const shared = join(root, "../shared/data/stories260K-hf");
  return existsSync(shared) ? shared : join(root, "test/fixtures/serve/model");
}

/** Every linear layer of a block: the bench's adapters unless told (`--targets`). */
export const BENCH_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/**
 * Writes BENCH_ADAPTERS as PEFT adapter folders under `dir` (adapter i from seeds i and 100 + i), rank 8
 * on `targets` (e.g. q_proj and v_proj, PEFT's default for Llama and the paper's).
 */
export function writeBenchAdapters(modelDir: string, dir: string, targets = BENCH_TARGETS): void {
  const lora: LoraConfig = {
    r: 8,
    lora_alpha: 16,
    lora_dropout: 0,
    target_modules: targets,
    use_rslora: false,
    init_lora_weights: true,
  };
  for (const [i, name] of BENCH_ADAPTERS.entries()) {
    const { model } = loadModelFolder(modelDir);
    applyLoRA(model, lora, { rng: new Rng(i) });
    const rng = new Rng(100 + i);
    for (const [, l] of loraLayers(model)) l.lora_B.data.set(Tensor.randn(l.lora_B.shape, rng, 0.02).data);
    saveAdapter(model, join(dir, name), lora, modelDir);
  }
}
