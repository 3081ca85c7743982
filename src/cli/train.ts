/** `lora train`: LoRA (or full) fine-tuning of a model folder, with checkpoints, exact resume and metrics. */
import { createHash } from "node:crypto";
import fs from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { parseCheckpoint } from "../io/checkpoint.js";
import { readAdapter } from "../io/node/adapter-folder.js";
import { listCheckpoints, resolveCheckpoint, runDirOf } from "../io/node/checkpoint-folder.js";
import { readJson } from "../io/node/json-file.js";
import { loadModelFolder } from "../io/node/model-folder.js";
import { checkOutSeparate, RunFolder } from "../io/node/run-folder.js";
import { readSafetensorsFile } from "../io/node/safetensors-file.js";
import { checkWritable } from "../io/node/writable.js";
import type { AdapterInput } from "../io/peft.js";
import { type CausalLM, modelFamily } from "../models/index.js";
import { type BaseDType, type BaseDTypeSetting, resolveBaseDtype } from "../nn/base-dtype.js";
import { packRows, rowTargets } from "../train/batches.js";
import type { TokenizedRow } from "../train/data.js";
import { checkSettings, dataFingerprint, initNote, planFineTune, runFineTune } from "../train/job.js";
import {
  type Settings,
  settingDiffs,
  settingsFrom,
  settingsToValues,
  tunedSettings,
} from "../train/settings.js";
import { DivergedError, type TrainResult } from "../train/trainer.js";
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
import { RunFolderStorage } from "./run-storage.js";
import { readConfigFile, resolvePaths, TRAIN_FLAGS } from "./train-settings.js";

const fmt = (n: number) => n.toLocaleString("en-US");

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

/**
 * The adapter a run continues: a checkpoint's (PEFT), or --adapter in any format, detected and named
 * on stderr.
 */
function startingAdapter(
  path: string,
  given: boolean,
  defaultTargets: string[],
  loaded: { model: CausalLM; config: Record<string, unknown> },
): AdapterInput {
  const read = readAdapter(path, {
    defaultTargets,
    numBlocks: loaded.model.numLayers,
    modelConfig: loaded.config,
  });
  if (given) console.error(`adapter: ${read.description}`);
  return { config: read.config, tensors: read.tensors, source: read.weights };
}

async function runTrain(v: Values): Promise<void> {
  const { s, resume } = resolveSettings(v);
  for (const name of ["model", "data", "out"] as const) {
    if (s[name] === null) throw new UsageError(`missing --${name} for 'lora train'; see 'lora train --help'`);
  }
  checkSettings(s);
  const out = s.out as string;
  // Every input is checked before the run writes anything.
  checkOutSeparate(out, {
    model: s.model as string,
    adapter: resume ? null : (s.adapter as string | null),
    data: s.data as string,
    "val-data": s["val-data"] as string | null,
    config: typeof v.config === "string" ? v.config : null,
  });
  const outState = resume ? null : RunFolder.check(out, v.overwrite === true);
  // an --overwrite of a previous run is staged in a folder beside it
  checkWritable(out, { sibling: outState?.kind === "run", flag: resume ? "--resume" : "--out" });
  if (resume) checkWritable(join(out, "checkpoints"), { sibling: false, flag: "--resume" });

  const loaded = loadModel(s.model as string, undefined, { baseDtype: s["base-dtype"] as BaseDType });
  const { config } = loaded;
  const family = modelFamily(config);
  const seqLen = (s["seq-len"] as number | null) ?? Math.min(contextLength(config), 2048);
  checkSeqLen(seqLen, config, "--seq-len");
  const templateVars = {
    date_string: (resume?.state.run.date_string as string | undefined) ?? templateDate(),
  };
  const rows = prepareRows(s.data as string, loaded, s, seqLen, "training", templateVars);
  const dataPrint = dataFingerprint(rows);
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

  // What is trained: a --full run's checkpoint model, or the base with a checkpoint's, the given or a fresh adapter.
  const adapterDir = s.full ? null : resume ? resume.dir : (s.adapter as string | null);
  const plan = planFineTune({
    settings: s,
    model: s.full && resume ? loadModelFolder(resume.dir).model : loaded.model,
    config,
    train: rows,
    valid: valRows,
    padId: loaded.tokenizer?.padId ?? 0,
    baseModelName: s.model as string,
    adapter: adapterDir ? startingAdapter(adapterDir, !resume, family.defaultTargets, loaded) : null,
    resume: resume?.state,
    tuned: resume?.tuned,
    record: {
      seq_len: seqLen,
      date_string: templateVars.date_string,
      data_fingerprint: dataPrint,
      weights_fingerprint: weightsPrint,
    },
  });
  const { report, steps, firstStep } = plan;

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
    `data: ${fmt(rows.length)} training rows${valNote}; ${steps} steps of ${s["batch-size"]}×${s["grad-accum"]} rows, seq-len ≤ ${seqLen}`,
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

  const storage = new RunFolderStorage(folder, out, {
    keep: s.keep as number,
    resumeStep: resume ? resume.state.step : null,
    tokenizerFrom: s.full ? loaded : null,
  });
  if (firstStep >= steps) {
    await runFineTune(plan, storage);
    console.log(
      `the run was already complete at step ${firstStep}/${steps} (pass --steps N to extend it); wrote ${storage.written.map((f) => join(out, f)).join(", ")}`,
    );
    return;
  }
  const progress = new Progress(steps, firstStep);
  progress.begin();
  // Ctrl-C ends the run after the step in progress, with a checkpoint of that step; a second one quits at once
  let interrupted = false;
  const onInterrupt = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error(
      "\nstopping after this step, with a checkpoint (Ctrl-C again quits at once, losing the step)",
    );
  };
  process.on("SIGINT", onInterrupt);
  let result: TrainResult;
  try {
    result = (await runFineTune(
      plan,
      storage,
      (e) => {
        if (e.type === "step") progress.step(e.info);
        else if (e.type === "eval") progress.eval(e.info);
        else if (e.type === "eval-row") progress.evalRow(e.done, e.total);
      },
      { shouldStop: () => interrupted },
    ))!;
  } catch (e) {
    process.off("SIGINT", onInterrupt);
    progress.stop();
    const staged = folder.staged;
    const keptNew = folder.abandon();
    const kept = staged
      ? ` The previous run in ${out} is unchanged.${keptNew ? ` The new run, with its checkpoint, is in ${keptNew}.` : ""}`
      : "";
    if (e instanceof DivergedError) {
      const lastSaved = storage.lastCheckpoint ?? resume?.dir ?? null;
      throw new Error(
        `${e.message}. ${lastSaved ? `The last good checkpoint is ${lastSaved}: continue it with --resume ${lastSaved} --lr ${(s.lr as number) / 10}` : "No checkpoint was saved yet: lower --lr"} (now ${s.lr}), or keep --max-grad-norm on.${kept}`,
      );
    }
    if (kept) (e as Error).message += `;${kept}`;
    throw e;
  }
  process.off("SIGINT", onInterrupt);
  progress.stop();
  if (result.stopped) {
    console.log(
      `\nstopped at step ${result.steps}/${steps}; checkpoint ${storage.lastCheckpoint}: continue with lora train --resume ${storage.lastCheckpoint}`,
    );
    process.exitCode = 130;
    return;
  }

  const written = [...storage.written, ...(await storage.plotLoss())];
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
  const note = initNote(plan);
  if (note) console.error(`note: ${note}`);
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
