/** `lora train`: LoRA (or full) fine-tuning of a model folder, with checkpoints, exact resume and metrics. */
import { createHash } from "node:crypto";
import fs from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { checkpointFiles, parseCheckpoint } from "../io/checkpoint.js";
import { modelTensors } from "../io/model-saver.js";
import { loadAdapter } from "../io/node/adapter-folder.js";
import {
  listCheckpoints,
  resolveCheckpoint,
  runDirOf,
  writeCheckpoint,
} from "../io/node/checkpoint-folder.js";
import { readJson } from "../io/node/json-file.js";
import { loadModelFolder, saveModelFolder } from "../io/node/model-folder.js";
import { readTextFile } from "../io/node/read-file.js";
import { checkOutSeparate, RunFolder } from "../io/node/run-folder.js";
import { readSafetensorsFile, writeFileAtomic } from "../io/node/safetensors-file.js";
import { adapterFiles, loraConfigProblems } from "../io/peft.js";
import { serializeSafetensors } from "../io/safetensors.js";
import { LORA_DEFAULTS, type LoraConfig } from "../lora/config.js";
import { applyLoRA, parameterReport, setLoraDropout } from "../lora/inject.js";
import { type CausalLM, type ModelFamily, modelFamily } from "../models/index.js";
import { type BaseDType, type BaseDTypeSetting, resolveBaseDtype } from "../nn/base-dtype.js";
import { Rng } from "../tensor/random.js";
import { Batcher, packRows, rowTargets } from "../train/batches.js";
import type { TokenizedRow } from "../train/data.js";
import { evaluate } from "../train/evaluate.js";
import { createOptimizer, type OptimizerKind } from "../train/optim.js";
import type { ScheduleKind } from "../train/schedule.js";
import { DivergedError, type Snapshot, train } from "../train/trainer.js";
import { type Command, str, UsageError, type Values } from "./command.js";
import {
  checkSeqLen,
  contextLength,
  type Loaded,
  loadModel,
  readRows,
  templateDate,
  tokenizeRows,
} from "./load.js";
import { Progress, peakMiB } from "./progress.js";
import {
  loraTargets,
  parseLayers,
  readConfigFile,
  resolvePaths,
  type Settings,
  settingDiffs,
  settingsFrom,
  settingsToValues,
  TRAIN_FLAGS,
  tunedSettings,
} from "./train-settings.js";

const fmt = (n: number) => n.toLocaleString("en-US");

/** FNV-1a over the rows' ids and masks: a resume refuses data that changed. */
function fingerprint(rows: readonly TokenizedRow[]): string {
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

function prepareRows(
  path: string,
  loaded: Loaded,
  s: Settings,
  seqLen: number,
  what: string,
  templateVars: Record<string, unknown>,
): TokenizedRow[] {
  const rows = readRows(path, undefined, what === "training" ? ["train"] : ["valid", "test", "train"]);
  const pack = s.pack && what === "training";
  const {
    rows: cut,
    truncated,
    promptCut,
  } = tokenizeRows(rows, loaded.tokenizer, {
    maskPrompt: s["mask-prompt"] as boolean,
    maxLen: pack ? Number.POSITIVE_INFINITY : seqLen,
    source: path,
    vocabSize: loaded.model.vocabSize,
    templateVars,
  });
  const tokenized = pack ? packRows(cut, seqLen) : cut;
  if (truncated > 0)
    console.error(
      `warning: ${path}: ${truncated} ${what} row(s) longer than --seq-len ${seqLen} were truncated at the end`,
    );
  if (promptCut > 0)
    console.error(
      `warning: ${path}: ${promptCut} prompt/completion row(s) longer than --seq-len ${seqLen} lost the start of their prompt, so that the completion stays whole`,
    );
  const kept = tokenized.filter((r) => rowTargets(r) > 0);
  if (kept.length === 0) {
    throw new Error(
      `${path}: no ${what} row has a token to predict (rows shorter than 2 tokens${s["mask-prompt"] ? ", or every token masked by --mask-prompt" : ""}); ${s["mask-prompt"] ? "train without --mask-prompt or check the completions" : "check the data"}`,
    );
  }
  if (kept.length < tokenized.length)
    console.error(
      `warning: ${path}: ${tokenized.length - kept.length} ${what} row(s) have no token to predict and are skipped`,
    );
  return kept;
}

/** The LoRA config of a fresh run, from the settings. */
function loraConfigOf(s: Settings, family: ModelFamily, modelType: unknown): LoraConfig {
  const config: LoraConfig = {
    ...LORA_DEFAULTS,
    r: s.rank as number,
    lora_alpha: s.alpha as number,
    lora_dropout: s.dropout as number,
    target_modules: loraTargets(s.targets as string | null, family.defaultTargets, modelType),
    layers_to_transform: s.layers ? parseLayers(s.layers as string) : null,
    use_rslora: s.rslora as boolean,
    init_lora_weights: s.init === "gaussian" ? "gaussian" : true,
    fan_in_fan_out: family.fanInFanOut,
  };
  // the same bounds as an adapter_config.json read from disk (--alpha 1e308 is a typo, not a run)
  const problems = loraConfigProblems(config);
  if (problems.length > 0) throw new UsageError(`--rank / --alpha / --dropout: ${problems.join("; ")}`);
  return config;
}

interface Resume {
  dir: string;
  state: ReturnType<typeof parseCheckpoint>;
  /** Tunable settings this resume changes: name -> [in the checkpoint, now]. */
  tuned: Record<string, [unknown, unknown]>;
}

/**
 * --base-dtype as the run record stores it: "auto" resolved for this backend (so a resume keeps the
 * dtype the run was trained with), and f32 for --full, which trains the base weights themselves.
 */
function withBaseDtype(s: Settings): Settings {
  const dtype = s["base-dtype"] as BaseDTypeSetting;
  if (s.full && dtype !== "auto" && dtype !== "f32")
    throw new UsageError(
      `--full trains every weight, so the base weights must be f32; drop --base-dtype ${dtype} (16-bit base weights are for LoRA runs)`,
    );
  return { ...s, "base-dtype": s.full ? "f32" : resolveBaseDtype(dtype) };
}

/**
 * Merges --config and flags, with paths made absolute. On --resume, checks them against the
 * checkpoint's run: the run continues in the folder that holds the checkpoint, whatever the checkpoint
 * says, and only settings that do not change what is trained, or are tunable (--lr, --steps, ...), may
 * differ.
 */
function resolveSettings(v: Values): { s: Settings; resume: Resume | null } {
  const given = { ...(typeof v.config === "string" ? readConfigFile(v.config) : {}), ...v };
  const resumePath = str(v, "resume");
  const cwd = process.cwd();
  if (!resumePath) return { s: resolvePaths(withBaseDtype(settingsFrom(given)), cwd), resume: null };
  if (v.overwrite)
    throw new UsageError("--overwrite cannot go with --resume, which continues the run in its folder");
  const dir = resolve(resolveCheckpoint(resumePath));
  const runDir = runDirOf(dir);
  const state = parseCheckpoint(
    readJson(join(dir, "trainer_state.json"))!,
    readSafetensorsFile(join(dir, "optimizer.safetensors")),
    dir,
  );
  // a checkpoint from before --base-dtype was trained on an f32 base; one from before paths were
  // stored resolved has them relative to where it was started, taken here as this directory
  const recorded = state.run.settings as Settings;
  const stored = resolvePaths({ ...recorded, "base-dtype": recorded["base-dtype"] ?? "f32" }, cwd);
  const s = resolvePaths(withBaseDtype(settingsFrom({ ...settingsToValues(stored), ...given })), cwd);
  if (given.out !== undefined && resolve(given.out as string) !== runDir)
    throw new UsageError(
      `--resume ${resumePath} continues its run in ${runDir}, not in --out ${given.out}; drop --out (to branch a run, copy its folder and resume the copy)`,
    );
  s.out = runDir;
  const diffs = settingDiffs(stored, s);
  if (diffs.length > 0) {
    throw new UsageError(
      `--resume ${dir}: this checkpoint was made with other settings:\n  ${diffs.join("\n  ")}\nDrop those flags to continue it as it was (the learning rate, steps, schedule, warmup, weight decay and clipping may change), or start a new run with another --out.`,
    );
  }
  for (const name of ["model", "data"] as const) {
    if (s[name] !== null && !fs.existsSync(s[name] as string))
      throw new UsageError(
        `--resume ${dir}: the run's --${name} ${s[name]} does not exist (from ${cwd}); pass --${name} PATH where it is now`,
      );
  }
  return { s, resume: { dir, state, tuned: tunedSettings(stored, s) } };
}

/** Refuses a checkpoint made for another model (config.json) or other data (the tokenized rows' hash). */
/**
 * A fingerprint of a model folder's weights, cheap at any size: each safetensors file's size and a
 * sha256 of its first and last MiB (the header, and data from both ends). A resume refuses a --model
 * whose weights differ from the run's even when its config.json is the same.
 */
function weightsFingerprint(path: string): string {
  // a GGUF model is one file; a folder's weights are its .safetensors files
  const file = fs.statSync(path).isFile();
  const dir = file ? dirname(path) : path;
  const files = file
    ? [basename(path)]
    : fs
        .readdirSync(dir)
        .filter((f) => f.endsWith(".safetensors"))
        .sort();
  const hash = createHash("sha256");
  const MiB = 1 << 20;
  for (const f of files) {
    const fd = fs.openSync(join(dir, f), "r");
    try {
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.alloc(Math.min(MiB, size));
      hash.update(`${f}:${size}:`);
      for (const at of [0, Math.max(0, size - MiB)]) {
        const n = fs.readSync(fd, buf, 0, buf.length, at);
        hash.update(buf.subarray(0, n));
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return hash.digest("hex").slice(0, 16);
}

function checkResumeFits(
  resume: Resume,
  config: Record<string, unknown>,
  dataPrint: string,
  weightsPrint: string,
): void {
  const stored = resume.state.run.model_config as Record<string, unknown>;
  const diffs = Object.keys({ ...config, ...stored }).filter(
    (k) => JSON.stringify(config[k]) !== JSON.stringify(stored[k]),
  );
  if (diffs.length > 0)
    throw new UsageError(
      `--resume ${resume.dir}: the checkpoint was made for another model (config.json differs in ${diffs.join(", ")})`,
    );
  const storedWeights = resume.state.run.weights_fingerprint;
  if (typeof storedWeights === "string" && storedWeights !== weightsPrint)
    throw new UsageError(
      `--resume ${resume.dir}: the model's weights differ from the ones the run was trained on (config.json is the same); pass the run's own --model`,
    );
  if (resume.state.run.data_fingerprint !== dataPrint)
    throw new UsageError(
      `--resume ${resume.dir}: the training data differs from the checkpoint's (rows:hash ${resume.state.run.data_fingerprint}, now ${dataPrint})`,
    );
}

/** Keeps the metrics rows up to `step` (a resumed run rewrites what came after its checkpoint). */
function truncateMetrics(path: string, step: number): void {
  if (!fs.existsSync(path)) return;
  const keep = readTextFile(path)
    .split("\n")
    .filter((line) => {
      try {
        return line !== "" && (JSON.parse(line) as { step: number }).step <= step;
      } catch {
        return false;
      }
    });
  writeFileAtomic(path, keep.map((l) => `${l}\n`).join(""));
}

async function runTrain(v: Values): Promise<void> {
  const { s, resume } = resolveSettings(v);
  for (const name of ["model", "data", "out"] as const) {
    if (s[name] === null) throw new UsageError(`missing --${name} for 'lora train'; see 'lora train --help'`);
  }
  if (s.steps !== null && s.epochs !== null) throw new UsageError("give --steps or --epochs, not both");
  if (s.full && s.adapter)
    throw new UsageError("--full trains every weight; it cannot start from an --adapter");
  if (!((s.lr as number) > 0)) throw new UsageError(`--lr must be > 0, got ${s.lr}`);
  const out = s.out as string;
  // Every input is checked before the run writes anything.
  checkOutSeparate(out, {
    model: s.model as string,
    adapter: resume ? null : (s.adapter as string | null),
    data: s.data as string,
    "val-data": s["val-data"] as string | null,
    config: typeof v.config === "string" ? v.config : null,
  });
  if (!resume) RunFolder.check(out, v.overwrite === true);

  const loaded = loadModel(s.model as string, undefined, { baseDtype: s["base-dtype"] as BaseDType });
  const { model, config } = loaded;
  const family = modelFamily(config);
  const seqLen = (s["seq-len"] as number | null) ?? Math.min(contextLength(config), 2048);
  checkSeqLen(seqLen, config, "--seq-len");
  const templateVars = {
    date_string: (resume?.state.run.date_string as string | undefined) ?? templateDate(),
  };
  const rows = prepareRows(s.data as string, loaded, s, seqLen, "training", templateVars);
  const dataPrint = fingerprint(rows);
  const weightsPrint = weightsFingerprint(s.model as string);
  if (resume) checkResumeFits(resume, config, dataPrint, weightsPrint);
  const valPath =
    (s["val-data"] as string | null) ??
    (fs.statSync(s.data as string).isDirectory() && fs.existsSync(join(s.data as string, "valid.jsonl"))
      ? (s.data as string)
      : null);
  const allValRows = valPath ? prepareRows(valPath, loaded, s, seqLen, "validation", templateVars) : null;
  const valCap = (s["val-batches"] as number) * (s["batch-size"] as number);
  const valRows = allValRows && valCap > 0 ? allValRows.slice(0, valCap) : allValRows;
  if (!valRows && s["eval-every"] !== null && (s["eval-every"] as number) > 0)
    throw new UsageError(
      `--eval-every ${s["eval-every"]} needs validation data: pass --val-data PATH (or a --data folder with valid.jsonl)`,
    );

  // What is trained: every weight (--full), a checkpoint's or given adapter, or a fresh LoRA.
  let lora: LoraConfig | null = null;
  let trained: CausalLM = model;
  if (s.full) {
    if (resume) trained = loadModelFolder(resume.dir).model;
    trained.unfreeze();
  } else if (resume || s.adapter) {
    lora = loadAdapter(model, resume ? resume.dir : (s.adapter as string), family.defaultTargets).config;
    lora = { ...lora, lora_dropout: s.dropout as number, fan_in_fan_out: family.fanInFanOut };
  } else {
    lora = loraConfigOf(s, family, config.model_type);
    applyLoRA(model, lora, { rng: new Rng(s.seed as number) });
  }
  const dropoutRng = new Rng((s.seed as number) ^ 0x5bd1e995);
  if (lora) setLoraDropout(trained, s.dropout as number, dropoutRng);
  const report = parameterReport(trained);

  const optimizer = createOptimizer(s.optimizer as OptimizerKind, trained.trainableParameters(), {
    lr: s.lr as number,
    weightDecay: s["weight-decay"] as number,
  });
  if (resume)
    optimizer.loadStateDict(resume.state.optimizer as Parameters<typeof optimizer.loadStateDict>[0]);
  const batcher = new Batcher(
    rows,
    {
      batchSize: s["batch-size"] as number,
      shuffle: !s["no-shuffle"],
      seed: s.seed as number,
      padId: loaded.tokenizer?.padId ?? 0,
    },
    resume?.state.data,
  );
  const accum = s["grad-accum"] as number;
  const steps =
    (s.steps as number | null) ??
    Math.max(1, Math.ceil((((s.epochs as number | null) ?? 1) * batcher.batchesPerEpoch) / accum));
  if ((s.warmup as number) > steps)
    throw new UsageError(`--warmup ${s.warmup} is more than the run's ${steps} steps; lower it or add steps`);
  const evalEvery = (s["eval-every"] as number | null) ?? Math.max(1, Math.round(steps / 10));

  // Everything is valid: from here on the run writes, into a folder that is safe to write.
  const folder = resume ? RunFolder.resume(out) : RunFolder.create(out, v.overwrite === true);
  console.log(
    `model: ${s.model} (${config.model_type}, ${fmt(report.total)} parameters, base weights ${s["base-dtype"]})`,
  );
  console.log(s.full ? `full fine-tuning: ${report.line}` : report.line);
  const valNote =
    valRows && allValRows && valRows.length < allValRows.length
      ? `, ${fmt(valRows.length)} of ${fmt(allValRows.length)} validation rows (--val-batches ${s["val-batches"]} × --batch-size ${s["batch-size"]}; 0 for all)`
      : valRows
        ? `, ${fmt(valRows.length)} validation rows`
        : "";
  console.log(
    `data: ${fmt(rows.length)} training rows${valNote}; ${steps} steps of ${s["batch-size"]}×${accum} rows, seq-len ≤ ${seqLen}`,
  );
  if (resume) {
    const changed = Object.entries(resume.tuned).map(
      ([k, [a, b]]) => `--${k} ${JSON.stringify(a)} -> ${JSON.stringify(b)}`,
    );
    console.log(
      `resuming from step ${resume.state.step} of ${steps} (${resume.dir})${changed.length ? `; changed: ${changed.join(", ")}` : ""}`,
    );
  } else if (folder.staged) {
    console.log(
      `--overwrite: the previous run in ${out} stays until this run's first checkpoint replaces it`,
    );
  }

  const baseName = s.model as string;
  const weightFiles = (): Record<string, Uint8Array | string> => {
    if (lora) return adapterFiles(trained, lora, baseName);
    const f32 = { ...config, torch_dtype: "float32" };
    return {
      "config.json": `${JSON.stringify(f32, null, 2)}\n`,
      "model.safetensors": serializeSafetensors(modelTensors(trained, f32), { format: "pt" }),
    };
  };
  const earlier = (resume?.state.run.resumes as unknown[] | undefined) ?? [];
  const run = {
    settings: s,
    seq_len: seqLen,
    date_string: templateVars.date_string,
    model_config: config,
    data_fingerprint: dataPrint,
    weights_fingerprint: weightsPrint,
    // each resume that changed a tunable setting: where, and what changed
    resumes:
      resume && Object.keys(resume.tuned).length > 0
        ? [...earlier, { step: resume.state.step, changed: resume.tuned }]
        : earlier,
  };
  let lastSaved: string | null = resume?.dir ?? null;
  const save = (snap: Snapshot) => {
    writeCheckpoint(
      folder.dir,
      snap.step,
      { ...weightFiles(), ...checkpointFiles(snap, run) },
      {
        keep: s.keep as number,
      },
    );
    folder.record(["checkpoints"]);
    folder.commit(); // an --overwrite run replaces the previous one now that it has a checkpoint
    lastSaved = join(out, "checkpoints", `step-${snap.step}`);
  };

  const metricsPath = () => join(folder.dir, "metrics.jsonl");
  if (resume) truncateMetrics(metricsPath(), resume.state.step);
  else fs.writeFileSync(metricsPath(), "");
  folder.record(["metrics.jsonl"]);
  const log = (row: Record<string, unknown>) => fs.appendFileSync(metricsPath(), `${JSON.stringify(row)}\n`);

  // The final files: the adapter, or (--full) a complete f32 model folder.
  const writeOutputs = (): string[] => {
    let names: string[];
    if (!lora) {
      names = saveModelFolder(trained, folder.dir, {
        config: { ...config, torch_dtype: "float32" },
        dtypes: new Map(),
        dir: s.model as string,
      });
    } else {
      const files = adapterFiles(trained, lora, baseName);
      for (const [name, data] of Object.entries(files)) writeFileAtomic(join(folder.dir, name), data);
      names = Object.keys(files);
    }
    folder.record(names);
    return names;
  };
  const firstStep = resume?.state.step ?? 0;
  if (firstStep >= steps) {
    const files = writeOutputs();
    console.log(
      `the run was already complete at step ${firstStep}/${steps} (pass --steps N to extend it); wrote ${files.map((f) => join(out, f)).join(", ")}`,
    );
    return;
  }
  const progress = new Progress(steps, firstStep);
  progress.begin();
  let result: Awaited<ReturnType<typeof train>>;
  try {
    result = await train(trained, {
      optimizer,
      data: batcher,
      steps,
      gradAccum: accum,
      lr: s.lr as number,
      schedule: { kind: s.schedule as ScheduleKind, warmup: s.warmup as number },
      maxGradNorm: s["max-grad-norm"] as number,
      evaluate: valRows ? () => evaluate(trained, valRows, (d, n) => progress.evalRow(d, n)).loss : undefined,
      evalEvery,
      save,
      saveEvery: s["save-every"] as number,
      rng: dropoutRng,
      resume: resume?.state,
      onStep: (i) => {
        log({
          step: i.step,
          loss: i.loss,
          lr: i.lr,
          tokens: i.tokens,
          elapsed_s: i.elapsedS,
          grad_norm: i.gradNorm,
        });
        progress.step(i);
      },
      onEval: (i) => {
        log({
          step: i.step,
          val_loss: i.valLoss,
          val_perplexity: Math.exp(i.valLoss),
          elapsed_s: i.elapsedS,
        });
        progress.eval(i);
      },
    });
  } catch (e) {
    progress.stop();
    const staged = folder.staged;
    const keptNew = folder.abandon();
    const kept = staged
      ? ` The previous run in ${out} is unchanged.${keptNew ? ` The new run, with its checkpoint, is in ${keptNew}.` : ""}`
      : "";
    if (e instanceof DivergedError) {
      throw new Error(
        `${e.message}. ${lastSaved ? `The last good checkpoint is ${lastSaved}: continue it with --resume ${lastSaved} --lr ${(s.lr as number) / 10}` : "No checkpoint was saved yet: lower --lr"} (now ${s.lr}), or keep --max-grad-norm on.${kept}`,
      );
    }
    if (kept) (e as Error).message += `;${kept}`;
    throw e;
  }
  progress.stop();

  const written = writeOutputs();
  const trainedSteps = result.steps - firstStep;
  const tokensNow = result.tokens - (resume?.state.tokens ?? 0);
  console.log(
    `\ndone: ${trainedSteps} step(s), ${fmt(tokensNow)} tokens in ${result.trainS.toFixed(1)} s of training (${fmt(Math.round(tokensNow / Math.max(result.trainS, 1e-9)))} tokens/s; ${(result.elapsedS - (resume?.state.elapsedS ?? 0)).toFixed(1)} s with evaluation and checkpoints), peak memory ${fmt(Math.round(peakMiB()))} MiB`,
  );
  console.log(
    `trainable: ${fmt(report.trainable)} of ${fmt(report.total)} parameters (${report.percent.toFixed(4)}%)`,
  );
  console.log(
    `final train loss ${result.loss.toFixed(4)}${result.valLoss !== null ? `, validation loss ${result.valLoss.toFixed(4)} (perplexity ${Math.exp(result.valLoss).toFixed(3)})` : ""}`,
  );
  console.log(
    `saved: ${written.map((f) => join(out, f)).join(", ")}; checkpoints in ${join(out, "checkpoints")}`,
  );
  if (listCheckpoints(out).length === 0) console.error("warning: no checkpoint was written");
}

export const trainCommand: Command = {
  name: "train",
  summary:
    "Fine-tune a model folder with LoRA (or --full) on a dataset; writes a PEFT adapter and checkpoints.",
  usage: "lora train --model DIR --data PATH --out DIR [options]",
  flags: TRAIN_FLAGS,
  examples: [
    "lora train --model ./my-model --data ./data --out ./run --rank 8 --alpha 16 --steps 200",
    "lora train --resume ./run",
    "lora train --model ./my-model --data ./chat.jsonl --mask-prompt --targets all-linear --out ./run2",
  ],
  run: runTrain,
};
