/**
 * The one table from `lora train`'s settings to the Hugging Face engine (TRL's SFTConfig, PEFT's
 * LoraConfig, accelerate), and `enginePlan`, which resolves a run's settings into the values the
 * generated train.py passes to them. Field names are spelled as TRL 1.13, PEFT 0.21, transformers 5.18
 * and accelerate 1.15 spell them. Pure and browser-safe.
 */
import {
  parseLayers,
  parseModuleNames,
  parseTargets,
  type SettingName,
  type Settings,
  SettingsError,
} from "../train/settings.js";

export const STRATEGIES = ["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"] as const;
export type Strategy = (typeof STRATEGIES)[number];
export const MIXED_PRECISIONS = ["no", "bf16", "fp16"] as const;
export type MixedPrecision = (typeof MIXED_PRECISIONS)[number];
export const DEVICES = ["cpu", "gpu"] as const;
export type Device = (typeof DEVICES)[number];

/** What `lora scale-out` adds to the training settings: how the engine runs. */
export interface EngineOptions {
  strategy: Strategy;
  numProcesses: number;
  mixedPrecision: MixedPrecision;
  device: Device;
}

/** The shape of the training data, which decides how TRL reads it and which loss mask applies. */
export type DataFormat = "text" | "prompt-completion" | "messages" | "input_ids";

/** How one of our settings reaches the engine: the field it sets, and what differs (if anything). */
export interface Mapping {
  /** The engine's field(s), e.g. `LoraConfig.r`, `SFTConfig.learning_rate`. */
  engine: string;
  /** How the value is carried over, in a few words. */
  how: string;
}

/** Every setting's mapping; typed over the setting names, so a new setting without one fails to compile. */
export const MAPPING: Record<SettingName, Mapping> = {
  model: {
    engine: "SFTTrainer(model=…)",
    how: "the folder (absolute) or Hub id, loaded by AutoModelForCausalLM",
  },
  data: { engine: "SFTTrainer(train_dataset=…)", how: "converted one to one into data/train.jsonl" },
  out: { engine: "the scale-out folder", how: "train.py, configs, data; the adapter lands in OUT/adapter" },
  "val-data": { engine: "SFTTrainer(eval_dataset=…)", how: "converted into data/valid.jsonl" },
  "val-batches": {
    engine: "eval_dataset.select(range(N × batch))",
    how: "the first N × --batch-size rows (0: all)",
  },
  rank: { engine: "LoraConfig.r", how: "same" },
  alpha: { engine: "LoraConfig.lora_alpha", how: "same" },
  dropout: { engine: "LoraConfig.lora_dropout", how: "same rate; masks from torch's RNG" },
  targets: {
    engine: "LoraConfig.target_modules",
    how: "names as a list, a regex as a string, all-linear as is; unset: PEFT's default for the model type",
  },
  layers: { engine: "LoraConfig.layers_to_transform", how: "the block indices" },
  rslora: { engine: "LoraConfig.use_rslora", how: "same" },
  dora: { engine: "LoraConfig.use_dora", how: "same" },
  "modules-to-save": { engine: "LoraConfig.modules_to_save", how: "the module names as a list" },
  "trainable-tokens": { engine: "LoraConfig.trainable_token_indices", how: "the token ids as a list" },
  "save-embedding-layers": {
    engine: "SFTTrainer.save_model → save_pretrained(save_embedding_layers='auto')",
    how: "PEFT's auto: the table of an adapted embedding is written whenever one is a target",
  },
  init: {
    engine: "LoraConfig.init_lora_weights",
    how: 'kaiming → true, the others by name ("gaussian", "pissa", "pissa_niter_N", "olora"); computed by PEFT',
  },
  "convert-to-lora": {
    engine: "(refused)",
    how: "the adapter comes back in PEFT's PiSSA/OLoRA form, which lora loads on the original base",
  },
  optimizer: {
    engine: "SFTTrainer(optimizer_cls_and_kwargs=…)",
    how: "torch.optim.SGD / Adam / AdamW, betas (0.9, 0.999), eps 1e-8, as ours",
  },
  lr: { engine: "SFTConfig.learning_rate (+ optimizer lr)", how: "same" },
  "weight-decay": {
    engine: "SFTConfig.weight_decay",
    how: "same (sgd/adam: L2, adamw: decoupled, as torch)",
  },
  schedule: {
    engine: "SFTConfig.lr_scheduler_type",
    how: "linear → linear, cosine → cosine, constant → constant_with_warmup",
  },
  warmup: { engine: "SFTConfig.warmup_steps", how: "same" },
  steps: { engine: "SFTConfig.max_steps", how: "same" },
  epochs: {
    engine: "SFTConfig.max_steps",
    how: "train.py counts ceil(E × ceil(rows / batch) / grad-accum) steps from the tokenized rows, as ours",
  },
  "batch-size": {
    engine: "SFTConfig.per_device_train_batch_size",
    how: "--batch-size / --num-processes per process, so the global batch stays --batch-size",
  },
  "grad-accum": { engine: "SFTConfig.gradient_accumulation_steps", how: "same" },
  "seq-len": { engine: "SFTConfig.max_length", how: "same; unset: the model's max_position_embeddings" },
  "max-grad-norm": { engine: "SFTConfig.max_grad_norm", how: "same (0: off)" },
  seed: { engine: "SFTConfig.seed, data_seed", how: "same number, torch's RNG" },
  "no-shuffle": { engine: "SFTConfig.train_sampling_strategy", how: "sequential (else random)" },
  "mask-prompt": {
    engine: "SFTConfig.completion_only_loss / assistant_only_loss",
    how: "prompt/completion → completion_only_loss, messages → assistant_only_loss; False when off",
  },
  pack: { engine: "SFTConfig.packing, packing_strategy", how: 'packing=True, packing_strategy="wrapped"' },
  "eval-every": {
    engine: "SFTConfig.eval_strategy, eval_steps, eval_on_start",
    how: "every N steps, at the start and the end (default 10 times a run; 0: start and end)",
  },
  "save-every": { engine: "SFTConfig.save_steps", how: "same; Trainer checkpoints in OUT/checkpoints" },
  keep: { engine: "SFTConfig.save_total_limit", how: "same (0: all → None)" },
  adapter: {
    engine: "PeftModel.from_pretrained(is_trainable=True)",
    how: "copied into OUT/init-adapter as a PEFT folder; its LoRA settings win, as in lora train",
  },
  full: { engine: "(refused)", how: "scale-out trains LoRA adapters only" },
  "base-dtype": {
    engine: "AutoModelForCausalLM.from_pretrained(dtype=…)",
    how: "f32/auto → float32, bf16 → bfloat16, f16 → float16",
  },
};

/** The engine-side settings that scale-out adds, for `--print-settings`. */
export const ENGINE_MAPPING: Record<string, Mapping> = {
  strategy: {
    engine: "accelerate_config.yaml distributed_type",
    how: "ddp → MULTI_GPU, fsdp → FSDP (fsdp_version 2), deepspeed-zero2/3 → DEEPSPEED zero_stage 2/3",
  },
  "num-processes": { engine: "accelerate_config.yaml num_processes", how: "same" },
  "mixed-precision": { engine: "accelerate_config.yaml mixed_precision, SFTConfig.bf16/fp16", how: "same" },
  device: {
    engine: "accelerate_config.yaml use_cpu, SFTConfig.use_cpu",
    how: "cpu: use_cpu true, so torch.distributed uses gloo; gpu: nccl",
  },
};

/** What train.py is told: the resolved values for PEFT, TRL, torch and accelerate, and the data files. */
export interface EnginePlan {
  model: string;
  /** torch dtype the base model is loaded in (AutoModelForCausalLM.from_pretrained(dtype=…)). */
  model_dtype: string;
  data: { format: DataFormat; train: string; valid: string | null };
  /** null when training continues a given adapter (its own adapter_config.json is used). */
  lora_config: Record<string, unknown> | null;
  init_adapter: string | null;
  optimizer: { class: "SGD" | "Adam" | "AdamW"; kwargs: Record<string, unknown> };
  /** SFTConfig keyword arguments; train.py fills max_steps (epochs), max_length (unset) and eval_steps. */
  sft_config: Record<string, unknown>;
  /** What train.py resolves from the tokenized data, as lora train does. */
  resolve: {
    steps: number | null;
    epochs: number | null;
    eval_every: number | null;
    eval_rows: number | null;
    global_batch_size: number;
  };
  world: { num_processes: number; strategy: Strategy; device: Device; mixed_precision: MixedPrecision };
  adapter_out: string;
}

const TORCH_OPTIMIZERS = { sgd: "SGD", adam: "Adam", adamw: "AdamW" } as const;
const SCHEDULERS = { linear: "linear", cosine: "cosine", constant: "constant_with_warmup" } as const;
const DTYPES: Record<string, string> = { f32: "float32", auto: "float32", bf16: "bfloat16", f16: "float16" };

/**
 * A run's settings as what the engine is given. `data` is the converted data's format and files
 * (relative to OUT); `model` the folder (absolute) or Hub id. Throws a SettingsError for what cannot be
 * mapped at all (--full, a batch that does not split over the processes).
 */
export function enginePlan(
  s: Settings,
  o: EngineOptions,
  data: EnginePlan["data"],
  model: string,
  initAdapter: string | null = null,
): EnginePlan {
  if (s.full)
    throw new SettingsError("--full is not mapped: lora scale-out trains LoRA adapters; drop --full");
  if (s.steps !== null && s.epochs !== null) throw new SettingsError("give --steps or --epochs, not both");
  const batch = s["batch-size"] as number;
  if (batch % o.numProcesses !== 0)
    throw new SettingsError(
      `--batch-size ${batch} does not split over --num-processes ${o.numProcesses}: the global batch stays --batch-size, so give a multiple of ${o.numProcesses}`,
    );
  const perDevice = batch / o.numProcesses;
  const mask = s["mask-prompt"] as boolean;
  const lr = s.lr as number;
  const wd = s["weight-decay"] as number;
  const optimizer = s.optimizer as keyof typeof TORCH_OPTIMIZERS;
  const opt = TORCH_OPTIMIZERS[optimizer];
  const kwargs: Record<string, unknown> = { lr, weight_decay: wd };
  if (opt !== "SGD") Object.assign(kwargs, { betas: [0.9, 0.999], eps: 1e-8 });
  const hasValid = data.valid !== null;
  const keep = s.keep as number;
  const sft: Record<string, unknown> = {
    output_dir: "checkpoints",
    learning_rate: lr,
    weight_decay: wd,
    adam_beta1: 0.9,
    adam_beta2: 0.999,
    adam_epsilon: 1e-8,
    lr_scheduler_type: SCHEDULERS[s.schedule as keyof typeof SCHEDULERS],
    warmup_steps: s.warmup,
    max_grad_norm: s["max-grad-norm"],
    per_device_train_batch_size: perDevice,
    per_device_eval_batch_size: perDevice,
    gradient_accumulation_steps: s["grad-accum"],
    max_steps: s.steps ?? -1,
    seed: s.seed,
    data_seed: s.seed,
    max_length: s["seq-len"],
    packing: s.pack,
    completion_only_loss: data.format === "prompt-completion" ? mask : false,
    assistant_only_loss: data.format === "messages" ? mask : false,
    train_sampling_strategy: s["no-shuffle"] ? "sequential" : "random",
    shuffle_dataset: false,
    bf16: o.mixedPrecision === "bf16",
    fp16: o.mixedPrecision === "fp16",
    use_cpu: o.device === "cpu",
    gradient_checkpointing: false,
    average_tokens_across_devices: true,
    logging_steps: 1,
    logging_first_step: true,
    save_strategy: "steps",
    save_steps: s["save-every"],
    save_total_limit: keep === 0 ? null : keep,
    eval_strategy: hasValid ? "steps" : "no",
    eval_on_start: hasValid,
    report_to: "none",
    dataset_num_proc: null,
    ddp_find_unused_parameters: false,
  };
  if (s.pack) sft.packing_strategy = "wrapped";
  const targets = s.targets === null ? null : parseTargets(s.targets as string);
  if (typeof targets === "string" && s.layers)
    throw new SettingsError(
      `--layers with --targets ${targets} is not mapped: PEFT refuses layers_to_transform when target_modules is a string (a regex or all-linear); name the modules (q_proj,v_proj), or write the blocks into the regex (e.g. .*\\.layers\\.(0|1)\\..*\\.(q_proj|v_proj)) and drop --layers`,
    );
  if (s["convert-to-lora"])
    throw new SettingsError(
      "--convert-to-lora is not mapped: train.py saves the adapter as PEFT's save_pretrained does, in the PiSSA/OLoRA form, which lora eval, generate and merge load on the original base model; drop --convert-to-lora",
    );
  const lora = initAdapter
    ? null
    : {
        r: s.rank,
        lora_alpha: s.alpha,
        lora_dropout: s.dropout,
        target_modules: targets,
        layers_to_transform: s.layers ? parseLayers(s.layers as string) : null,
        use_rslora: s.rslora,
        init_lora_weights: s.init === "kaiming" ? true : s.init,
        use_dora: s.dora,
        modules_to_save: parseModuleNames(s["modules-to-save"] as string | null),
        trainable_token_indices: s["trainable-tokens"]
          ? parseLayers(s["trainable-tokens"] as string, "--trainable-tokens")
          : null,
        bias: "none",
        task_type: "CAUSAL_LM",
      };
  const evalEvery = s["eval-every"] as number | null;
  const valBatches = s["val-batches"] as number;
  return {
    model,
    model_dtype: DTYPES[s["base-dtype"] as string]!,
    data,
    lora_config: lora,
    init_adapter: initAdapter,
    optimizer: { class: opt, kwargs },
    sft_config: sft,
    resolve: {
      steps: s.steps as number | null,
      epochs: s.steps === null ? ((s.epochs as number | null) ?? 1) : null,
      eval_every: hasValid ? evalEvery : null,
      eval_rows: hasValid && valBatches > 0 ? valBatches * batch : null,
      global_batch_size: batch,
    },
    world: {
      num_processes: o.numProcesses,
      strategy: o.strategy,
      device: o.device,
      mixed_precision: o.mixedPrecision,
    },
    adapter_out: "adapter",
  };
}
