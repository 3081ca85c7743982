/**
 * One LoRA training step end to end (forward, backward, AdamW) on a randomly initialised GPT-2-small
 * shaped model, LoRA r=8 on c_attn, per backend: wasm at 1 and 2 threads (and ref with STEP_REF=1; it
 * is slow). Env: STEP_T (sequence length, default 128), STEP_LAYERS (default 12).
 * Not a test: `npm run bench:step`.
 */
import {
  applyLoRA,
  backward,
  buildModel,
  createOptimizer,
  languageModelLoss,
  nextTokenTargets,
  Rng,
  randomParams,
  setBackend,
  setThreads,
} from "../src/node.js";

const T = Number(process.env.STEP_T ?? 128);
const layers = Number(process.env.STEP_LAYERS ?? 12);
const config = {
  model_type: "gpt2",
  activation_function: "gelu_new",
  vocab_size: 50257,
  n_positions: 1024,
  n_embd: 768,
  n_layer: layers,
  n_head: 12,
  layer_norm_epsilon: 1e-5,
};
const model = buildModel(config, randomParams(0));
applyLoRA(
  model,
  {
    r: 8,
    lora_alpha: 16,
    lora_dropout: 0,
    target_modules: ["c_attn"],
    use_rslora: false,
    init_lora_weights: true,
  },
  { rng: new Rng(0) },
);
const opt = createOptimizer("adamw", model.trainableParameters(), { lr: 1e-3, weightDecay: 0 });
const ids = Int32Array.from({ length: T }, (_, t) => (t * 7919) % 50257);
const targets = nextTokenTargets(ids, 1, T);

function step(): number {
  const t0 = performance.now();
  const loss = languageModelLoss(model, ids, [1, T], targets);
  backward(loss);
  opt.step();
  opt.zeroGrad();
  return performance.now() - t0;
}

const wasm = (n: number) => () => {
  setBackend("wasm");
  setThreads(n);
};
const runs: [string, () => void][] = [
  ["wasm, 1 thread", wasm(1)],
  ["wasm, 2 threads", wasm(2)],
];
if (process.env.STEP_REF) runs.push(["ref", () => setBackend("ref")]);
console.log(`GPT-2 small shape, ${layers} layers, T=${T}, LoRA r=8 on c_attn`);
for (const [name, use] of runs) {
  use();
  step();
  const times = [step(), step()];
  console.log(
    `${name}: ${Math.min(...times).toFixed(0)} ms per step (${((T * 1000) / Math.min(...times)).toFixed(0)} tok/s)`,
  );
}
