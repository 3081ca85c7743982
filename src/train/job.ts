/**
 * A fine-tuning job, the one pipeline behind `lora train` and the web page: from settings (the table
 * in settings.ts), a loaded model and tokenized rows to trained weights, with checkpoints, metrics and
 * outputs handed to a `RunStorage` and progress given as events. It reads no file: the shell reads
 * and checks its inputs, and stores what the job hands over.
 *
 *   planFineTune(input)          everything checked and set up, nothing stored yet
 *   runFineTune(plan, storage)   the steps, evaluations, checkpoints and outputs
 */
import { type CheckpointState, checkpointFiles } from "../io/checkpoint.js";
import { modelTensors } from "../io/model-saver.js";
import { type AdapterInput, adapterFiles, attachAdapter, loraConfigProblems } from "../io/peft.js";
import { plainLoraAdapterFiles } from "../io/peft-convert.js";
import { serializeSafetensors } from "../io/safetensors.js";
import { LORA_DEFAULTS, type LoraConfig } from "../lora/config.js";
import { isMutatingInit, type LoraInit } from "../lora/init.js";
import {
  applyLoRA,
  type ParamReport,
  parameterReport,
  scopeTargets,
  setLoraDropout,
} from "../lora/inject.js";
import { type CausalLM, type ModelFamily, modelFamily } from "../models/index.js";
import { Rng } from "../tensor/random.js";
import { Batcher } from "./batches.js";
import type { TokenizedRow } from "./data.js";
import { evaluate } from "./evaluate.js";
import { createOptimizer, type Optimizer, type OptimizerKind } from "./optim.js";
import type { RunStorage } from "./run-storage.js";
import type { ScheduleKind } from "./schedule.js";
import { loraTargets, parseLayers, parseModuleNames, type Settings, SettingsError } from "./settings.js";
import { type EvalInfo, type Snapshot, type StepInfo, type TrainResult, train } from "./trainer.js";

export interface FineTuneInput {
  /** Resolved settings: every name of the table (defaults filled in, base-dtype resolved). */
  settings: Settings;
  /** The base model with its base dtype applied, or, to resume a --full run, the checkpoint's model. */
  model: CausalLM;
  config: Record<string, unknown>;
  train: readonly TokenizedRow[];
  /** Held-out rows (already capped by --val-batches), or null for none. */
  valid: readonly TokenizedRow[] | null;
  padId: number;
  /** What the written adapter names as its base (base_model_name_or_path). */
  baseModelName: string;
  /** The adapter to continue from: --adapter, or the checkpoint of a LoRA run being resumed. */
  adapter?: AdapterInput | null;
  /** The checkpoint's state when resuming. */
  resume?: (CheckpointState & { run: Record<string, unknown> }) | null;
  /** The tunable settings this resume changes, name -> [stored, now]: recorded in run.resumes. */
  tuned?: Record<string, [unknown, unknown]>;
  /** Stored in every checkpoint's run record beside the settings (fingerprints, seq_len, ...). */
  record?: Record<string, unknown>;
}

export interface FineTunePlan {
  readonly input: FineTuneInput;
  /** The model whose parameters are trained (LoRA-wrapped, or every weight with --full). */
  readonly trained: CausalLM;
  /** The adapter's config, or null for --full. */
  readonly lora: LoraConfig | null;
  readonly optimizer: Optimizer;
  readonly batcher: Batcher;
  readonly steps: number;
  readonly firstStep: number;
  readonly evalEvery: number;
  readonly report: ParamReport;
  /** The random stream of LoRA dropout's masks, saved in checkpoints. */
  readonly dropoutRng: Rng;
  /** The run record every checkpoint stores (settings, model config, the shell's record, resumes). */
  readonly run: Record<string, unknown>;
}

export type FineTuneEvent =
  | { type: "step"; info: StepInfo }
  | { type: "eval"; info: EvalInfo }
  /** Validation progress: `done` of `total` rows scored. */
  | { type: "eval-row"; done: number; total: number }
  | { type: "checkpoint"; step: number };

/** The LoRA config of a fresh run, from the settings. */
export function loraConfigOf(s: Settings, family: ModelFamily, modelType: unknown): LoraConfig {
  const config: LoraConfig = {
    ...LORA_DEFAULTS,
    r: s.rank as number,
    lora_alpha: s.alpha as number,
    lora_dropout: s.dropout as number,
    target_modules: loraTargets(s.targets as string | null, family.defaultTargets, modelType),
    layers_to_transform: s.layers ? parseLayers(s.layers as string) : null,
    use_rslora: s.rslora as boolean,
    use_dora: s.dora as boolean,
    init_lora_weights: s.init === "kaiming" ? true : (s.init as Exclude<LoraInit, "kaiming">),
    fan_in_fan_out: family.fanInFanOut,
    modules_to_save: parseModuleNames(s["modules-to-save"] as string | null),
    trainable_token_indices: s["trainable-tokens"]
      ? parseLayers(s["trainable-tokens"] as string, "--trainable-tokens")
      : null,
  };
  // the same bounds as an adapter_config.json read from disk (--alpha 1e308 is a typo, not a run)
  const problems = loraConfigProblems(config);
  if (problems.length > 0) throw new SettingsError(`--rank / --alpha / --dropout: ${problems.join("; ")}`);
  return config;
}

/** FNV-1a over the rows' ids and masks: a resume refuses data that changed. */
export function dataFingerprint(rows: readonly TokenizedRow[]): string {
  let h = 0x811c9dc5;
  const mix = (x: number) => {
    h = Math.imul(h ^ (x & 0xffff), 16777619);
    h = Math.imul(h ^ (x >>> 16), 16777619);
  };
  for (const r of rows) {
    mix(r.ids.length);
    for (let i = 0; i < r.ids.length; i++) mix(r.ids[i]! * 2 + (r.mask[i] ? 1 : 0));
  }
  return `${rows.length}:${(h >>> 0).toString(16)}`;
}

/** The checks of the settings alone, which a shell may run before it loads anything. */
export function checkSettings(s: Settings): void {
  if (s.steps !== null && s.epochs !== null) throw new SettingsError("give --steps or --epochs, not both");
  if (s.full && s.adapter)
    throw new SettingsError("--full trains every weight; it cannot start from an --adapter");
  if (s.full && s.dora)
    throw new SettingsError("--full trains every weight; --dora is for an adapter (drop one)");
  if (!((s.lr as number) > 0)) throw new SettingsError(`--lr must be > 0, got ${s.lr}`);
  if (s.full && (s["modules-to-save"] || s["trainable-tokens"]))
    throw new SettingsError("--full trains every weight; drop --modules-to-save and --trainable-tokens");
}

/**
 * Checks the settings against the inputs and sets the run up: the LoRA layers (fresh, or the given
 * adapter's), dropout, the optimizer (with a checkpoint's state), the data order and the number of
 * steps. Throws a SettingsError, changing nothing the caller stores, when something does not fit.
 */
export function planFineTune(input: FineTuneInput): FineTunePlan {
  const { settings: s, model, config, resume } = input;
  checkSettings(s);
  if (!input.valid && s["eval-every"] !== null && (s["eval-every"] as number) > 0)
    throw new SettingsError(
      `--eval-every ${s["eval-every"]} needs validation data: pass --val-data PATH (or a --data folder with valid.jsonl)`,
    );
  const family = modelFamily(config);
  if (s.full && family.checkpoint.towers)
    throw new SettingsError(
      `--full trains and writes the text model only, which would leave the model's other towers (${family.checkpoint.towers.map((t) => t.what).join(", ")}) out of the saved folder; train a LoRA adapter instead (drop --full)`,
    );

  // What is trained: every weight (--full), a checkpoint's or given adapter, or a fresh LoRA.
  let lora: LoraConfig | null = null;
  if (s.full) model.unfreeze();
  else if (input.adapter) {
    const { config: adapterConfig, tensors, source } = input.adapter;
    if (s.dora && !adapterConfig.use_dora)
      throw new SettingsError(
        `--dora: the adapter ${source} is a plain LoRA adapter (use_dora false), and training goes on with its own config; drop --dora, or start a fresh DoRA adapter without --adapter`,
      );
    attachAdapter(model, adapterConfig, tensors, source);
    lora = { ...adapterConfig, lora_dropout: s.dropout as number, fan_in_fan_out: family.fanInFanOut };
  } else {
    lora = loraConfigOf(s, family, config.model_type);
    applyLoRA(model, lora, { rng: new Rng(s.seed as number) });
    // a multimodal folder's text model: name the targets so PEFT adapts these modules, and no others
    if (model.adapterScope) lora = scopeTargets(model, lora, model.adapterScope);
  }
  if (s["convert-to-lora"] && !(lora && isMutatingInit(lora.init_lora_weights)))
    throw new SettingsError(
      `--convert-to-lora converts an adapter made by --init pissa, pissa_niter_N or olora; this run's ${lora ? `adapter (init_lora_weights ${JSON.stringify(lora.init_lora_weights)}) already is a plain LoRA of the base` : "--full fine-tuning has no adapter"}: drop --convert-to-lora`,
    );
  const dropoutRng = new Rng((s.seed as number) ^ 0x5bd1e995);
  if (lora) setLoraDropout(model, s.dropout as number, dropoutRng);

  const optimizer = createOptimizer(s.optimizer as OptimizerKind, model.trainableParameters(), {
    lr: s.lr as number,
    weightDecay: s["weight-decay"] as number,
  });
  if (resume) optimizer.loadStateDict(resume.optimizer as Parameters<typeof optimizer.loadStateDict>[0]);
  const batcher = new Batcher(
    input.train,
    {
      batchSize: s["batch-size"] as number,
      shuffle: !s["no-shuffle"],
      seed: s.seed as number,
      padId: input.padId,
    },
    resume?.data,
  );
  const accum = s["grad-accum"] as number;
  const steps =
    (s.steps as number | null) ??
    Math.max(1, Math.ceil((((s.epochs as number | null) ?? 1) * batcher.batchesPerEpoch) / accum));
  if ((s.warmup as number) > steps)
    throw new SettingsError(
      `--warmup ${s.warmup} is more than the run's ${steps} steps; lower it or add steps`,
    );
  const evalEvery = (s["eval-every"] as number | null) ?? Math.max(1, Math.round(steps / 10));

  const earlier = (resume?.run.resumes as unknown[] | undefined) ?? [];
  const tuned = input.tuned ?? {};
  const run = {
    settings: s,
    ...input.record,
    model_config: config,
    // each resume that changed a tunable setting: where, and what changed
    resumes:
      resume && Object.keys(tuned).length > 0 ? [...earlier, { step: resume.step, changed: tuned }] : earlier,
  };
  return {
    input,
    trained: model,
    lora,
    optimizer,
    batcher,
    steps,
    firstStep: resume?.step ?? 0,
    evalEvery,
    report: parameterReport(model),
    dropoutRng,
    run,
  };
}

/**
 * What a shell tells the user about the adapter of a PiSSA / OLoRA run (null for any other run): it was
 * trained on the residual base, and how to load it.
 */
export function initNote(plan: FineTunePlan): string | null {
  const init = plan.lora?.init_lora_weights;
  if (!isMutatingInit(init)) return null;
  if (plan.input.settings["convert-to-lora"])
    return `the adapter is the ${init} run converted to a plain LoRA of the original base model (rank ${2 * plan.lora!.r}, init_lora_weights true: B·A - B0·A0); the checkpoints keep the ${init} form, which --resume needs`;
  const niter = init.startsWith("pissa_niter_")
    ? ` In PEFT this one does not reproduce: ${init}'s randomized SVD draws other random numbers there, so PEFT computes another residual (on a test model its logits differ by up to 3.6); for PEFT, use the --convert-to-lora form.`
    : "";
  return `the adapter has init_lora_weights "${init}": it was trained on the residual W0 - s·B0·A0, which PEFT and lora recompute from the original base model whenever they load it. Load it on the original base model only (not on a merged or converted one); llama.cpp, mlx and several adapters on one base need a plain LoRA: train with --convert-to-lora for that.${niter}`;
}

/**
 * The trained weights as files: the PEFT adapter, or (--full) config.json and f32 model.safetensors.
 * The run's outputs (`outputs`) with --convert-to-lora hold the PiSSA / OLoRA adapter as a plain LoRA
 * of the original base; checkpoints keep PEFT's own form, from which --resume recomputes the residual.
 */
export function weightFiles(plan: FineTunePlan, outputs = false): Record<string, Uint8Array | string> {
  const { trained, lora, input } = plan;
  if (lora && outputs && input.settings["convert-to-lora"] && isMutatingInit(lora.init_lora_weights))
    return plainLoraAdapterFiles(trained, lora, input.baseModelName);
  if (lora)
    return adapterFiles(trained, lora, input.baseModelName, {
      saveEmbeddingLayers: input.settings["save-embedding-layers"] as boolean,
    });
  const f32 = { ...input.config, torch_dtype: "float32" };
  return {
    "config.json": `${JSON.stringify(f32, null, 2)}\n`,
    "model.safetensors": serializeSafetensors(modelTensors(trained, f32), { format: "pt" }),
  };
}

/**
 * Runs the plan: a metrics row per step and per evaluation, a checkpoint every --save-every steps
 * and at the end, then the outputs. A run whose checkpoint is already at its last step only writes
 * its outputs. Errors (a DivergedError among them) propagate after what was stored stays stored.
 * `control.shouldStop`, asked after each step, ends the run there with a checkpoint of that step and no
 * outputs (the result's `stopped`); resuming from that checkpoint continues the same run.
 */
export async function runFineTune(
  plan: FineTunePlan,
  storage: RunStorage,
  onEvent: (e: FineTuneEvent) => void = () => {},
  control: { shouldStop?: () => boolean } = {},
): Promise<TrainResult | null> {
  const { input, trained, steps } = plan;
  const s = input.settings;
  if (plan.firstStep >= steps) {
    await storage.saveOutputs(weightFiles(plan, true));
    return null;
  }
  const valid = input.valid;
  const save = async (snap: Snapshot) => {
    await storage.saveCheckpoint(snap.step, { ...weightFiles(plan), ...checkpointFiles(snap, plan.run) });
    onEvent({ type: "checkpoint", step: snap.step });
  };
  const result = await train(trained, {
    optimizer: plan.optimizer,
    data: plan.batcher,
    steps,
    gradAccum: s["grad-accum"] as number,
    lr: s.lr as number,
    schedule: { kind: s.schedule as ScheduleKind, warmup: s.warmup as number },
    maxGradNorm: s["max-grad-norm"] as number,
    evaluate: valid
      ? () => evaluate(trained, valid, (done, total) => onEvent({ type: "eval-row", done, total })).loss
      : undefined,
    evalEvery: plan.evalEvery,
    save,
    saveEvery: s["save-every"] as number,
    rng: plan.dropoutRng,
    resume: input.resume ?? undefined,
    shouldStop: control.shouldStop,
    onStep: async (info) => {
      await storage.appendMetrics({
        step: info.step,
        loss: info.loss,
        lr: info.lr,
        tokens: info.tokens,
        elapsed_s: info.elapsedS,
        grad_norm: info.gradNorm,
      });
      onEvent({ type: "step", info });
    },
    onEval: async (info) => {
      await storage.appendMetrics({
        step: info.step,
        val_loss: info.valLoss,
        val_perplexity: Math.exp(info.valLoss),
        elapsed_s: info.elapsedS,
      });
      onEvent({ type: "eval", info });
    },
  });
  // a stopped run has its checkpoint at the step it stopped; its outputs wait for the resume's end
  if (!result.stopped) await storage.saveOutputs(weightFiles(plan, true));
  return result;
}
