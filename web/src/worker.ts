/**
 * The training worker: loads the model and data, runs the library's fine-tuning job (planFineTune /
 * runFineTune, the pipeline behind `lora train`) over the WebAssembly backend, with checkpoints in OPFS,
 * and posts progress to the page. When the page is cross-origin isolated, the backend is threaded: a
 * pool of kernel workers (kernel-worker.ts) over one shared memory, bit-identical to one thread;
 * otherwise it runs on this worker alone. Every failure is posted as an error message.
 */

import { zipSync } from "fflate";
import {
  adapterFiles,
  attachAdapter,
  availableBackends,
  type CausalLM,
  contextLength,
  type DataRow,
  evaluate,
  findTargets,
  fuseLoRA,
  generate,
  ggufAdapterFromModel,
  loadModelFromTensors,
  loraConfigOf,
  mergeLoRA,
  modelFamily,
  modelTensors,
  packRows,
  parseAdapterConfig,
  parseCheckpoint,
  parseDataset,
  parseSafetensors,
  planFineTune,
  registerBackend,
  resolveBaseDtype,
  rowTargets,
  runFineTune,
  type SafetensorsTensor,
  type Settings,
  SettingsError,
  serializeSafetensors,
  setBackend,
  settingDiffs,
  settingsFrom,
  type TokenizedRow,
  tokenizeRows,
} from "../../src/index.js";
import { createWebThreadedWasm, relaxedSupported, type WebWorkerPool } from "../../src/kernels/wasm/index.js";
import { DEMO_DATA, DEMO_MODEL, DEMO_NAME, DEMO_PROMPT } from "./demo.js";
import { type ModelInput, type NamedBlob, openModel, readWeights, tabMemoryLimit } from "./model-files.js";
import { OpfsRunStorage } from "./opfs-storage.js";
import type { FromWorker, SettingInput, Source, ToWorker } from "./protocol.js";

const post = (m: FromWorker) => (self as unknown as { postMessage(m: unknown): void }).postMessage(m);

interface Opened {
  source: Source;
  model: ModelInput;
  tensors: Map<string, SafetensorsTensor & { file: string }>;
  train: DataRow[];
  /** The held-out rows: valid.jsonl of the demo, or the last tenth of a picked data file. */
  valid: DataRow[];
  prompt: string;
}

let opened: Opened | null = null;
/** Opens are numbered: a folder and a file picked in quick succession open twice, and only the last counts. */
let openSeq = 0;
let stopRequested = false;
let lastAdapter: Record<string, Uint8Array | string> | null = null;
/** The model that made lastAdapter, with its trained LoRA layers (for the GGUF export). */
let lastTrained: CausalLM | null = null;

const fetchBlob = async (name: string, url: string): Promise<NamedBlob> => {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`the demo's ${name} could not be loaded from the page (${r.status} ${url})`);
  return { name, blob: await r.blob() };
};

function dataFormat(name: string): "txt" | "jsonl" {
  const ext = name.toLowerCase().split(".").pop();
  if (ext === "txt" || ext === "jsonl") return ext;
  throw new Error(`${name}: unsupported data file type ".${ext}"; pick a .txt or .jsonl file`);
}

const isolated = (self as { crossOriginIsolated?: boolean }).crossOriginIsolated === true;
/** The threaded backend's pool, started on the first open that asks for more than one thread. */
let pool: WebWorkerPool | null = null;
let poolRelaxed = false;
/** Why the pool did not start (then the worker trains on one thread and says why). */
let poolError: string | null = null;

/** The wasm backend with `threads` threads where the page is cross-origin isolated, else one. */
async function useBackend(threads: number): Promise<void> {
  if (!availableBackends().includes("wasm"))
    throw new Error("this browser has no WebAssembly SIMD; use a current Chrome, Edge or Firefox");
  if (isolated && threads > 1 && !pool && poolError === null) {
    post({ type: "status", text: `starting ${threads - 1} kernel worker(s)` });
    try {
      const t = await createWebThreadedWasm({
        threads,
        spawn: (onError) => {
          const w = new Worker(new URL("./kernel-worker.ts", import.meta.url), { type: "module" });
          w.onerror = (e) => onError(e.message);
          return w;
        },
      });
      registerBackend(t.backend);
      pool = t.pool;
      poolRelaxed = t.relaxed;
    } catch (e) {
      poolError = (e as Error).message ?? String(e);
    }
  }
  if (pool) pool.count = Math.max(1, Math.min(threads, pool.size));
  setBackend("wasm");
}

async function open(source: Source): Promise<Opened> {
  let files: NamedBlob[];
  let name: string;
  let train: DataRow[];
  let valid: DataRow[];
  let prompt: string;
  if (source.kind === "demo") {
    name = DEMO_NAME;
    files = await Promise.all(Object.entries(DEMO_MODEL).map(([n, u]) => fetchBlob(n, u)));
    const [tr, va] = await Promise.all([
      fetchBlob("train.jsonl", DEMO_DATA.train),
      fetchBlob("valid.jsonl", DEMO_DATA.valid),
    ]);
    train = parseDataset(await tr.blob.text(), "assets/task/train.jsonl", "jsonl");
    valid = parseDataset(await va.blob.text(), "assets/task/valid.jsonl", "jsonl");
    prompt = DEMO_PROMPT;
  } else {
    name = source.folder;
    files = source.model;
    const rows = parseDataset(await source.data.blob.text(), source.data.name, dataFormat(source.data.name));
    // a single file has no held-out split: its last tenth is held out, in file order (as npm start does)
    const cut = rows.length - Math.max(1, Math.floor(rows.length / 10));
    if (cut < 1)
      throw new Error(
        `${source.data.name}: ${rows.length} row(s): too few to train on and hold some out; give at least 2 rows`,
      );
    train = rows.slice(0, cut);
    valid = rows.slice(cut);
    const first = rows[0]!;
    prompt =
      ("text" in first ? first.text : "prompt" in first ? first.prompt : "").slice(0, 40) ||
      "Once upon a time";
  }
  post({ type: "status", text: `checking ${name}` });
  const model = await openModel(name, files, tabMemoryLimit());
  post({
    type: "status",
    text: `reading ${name}'s weights (${(model.size.bytes / 2 ** 20).toFixed(1)} MiB)`,
  });
  const tensors = await readWeights(model);
  return { source, model, tensors, train, valid, prompt };
}

/** Which backend variant trains: how many threads, relaxed-SIMD FMA or plain mul+add (they round differently). */
function threadsLine(): string {
  const variant = (pool ? poolRelaxed : relaxedSupported()) ? "relaxed-SIMD FMA" : "plain SIMD mul+add";
  if (pool && pool.count > 1)
    return `${pool.count} threads (WebAssembly ${variant}; the page is cross-origin isolated: Web Workers over one shared memory)`;
  const why = !isolated
    ? "the page is not cross-origin isolated, so it has no shared memory for threads"
    : poolError !== null
      ? `the page is cross-origin isolated, but ${poolError}`
      : "the page is cross-origin isolated, and one thread was asked for";
  return `1 thread (WebAssembly ${variant}; ${why})`;
}

/** The settings table resolved from the page's inputs (the CLI's names and defaults), base dtype resolved. */
function settingsOf(input: SettingInput): Settings {
  const given: Record<string, string | boolean> = {};
  for (const [k, v] of Object.entries(input))
    if (v !== "" && v !== false) given[k] = typeof v === "boolean" ? v : String(v);
  const s = settingsFrom(given);
  return { ...s, "base-dtype": resolveBaseDtype(s["base-dtype"] as "auto") };
}

function loadBase(o: Opened, s: Settings): CausalLM {
  const baseDtype = s["base-dtype"] as "f32";
  const { model } = loadModelFromTensors(o.model.config, o.tensors, o.model.name, { baseDtype });
  model.eval();
  return model;
}

/** The rows as `lora train` prepares them: tokenized, cut to seq-len (or packed), rows without targets dropped. */
function prepare(
  o: Opened,
  rows: DataRow[],
  s: Settings,
  seqLen: number,
  what: string,
  vocabSize: number,
): TokenizedRow[] {
  const pack = s.pack && what === "training";
  const { rows: cut } = tokenizeRows(rows, o.model.tokenizer, {
    maskPrompt: s["mask-prompt"] as boolean,
    maxLen: pack ? Number.POSITIVE_INFINITY : seqLen,
    source: what,
    vocabSize,
  });
  const kept = (pack ? packRows(cut, seqLen) : cut).filter((r) => rowTargets(r) > 0);
  if (kept.length === 0)
    throw new Error(
      `the ${what} data has no usable row: every row is shorter than 2 tokens${s["mask-prompt"] ? " or fully masked" : ""}`,
    );
  return kept;
}

function sample(model: CausalLM, o: Opened): string {
  model.eval();
  const tok = o.model.tokenizer;
  const ids = [
    ...generate(model, tok.encode(o.prompt), { maxTokens: 40, temperature: 0, stopIds: tok.eosIds }),
  ];
  return `${o.prompt}${tok.decode(ids)}`;
}

/** PEFT's trainable-parameter line for these settings, counted on the base model without changing it. */
function report(o: Opened, input: SettingInput): string {
  const s = settingsOf(input);
  const family = modelFamily(o.model.config);
  const model = loadBase(o, s);
  const lora = loraConfigOf(s, family, o.model.config.model_type);
  let total = 0;
  for (const p of model.parameters()) total += p.size;
  let trainable = 0;
  for (const [, l] of findTargets(model, lora)) trainable += lora.r * (l.inFeatures + l.outFeatures);
  total += trainable;
  const fmt = (n: number) => n.toLocaleString("en-US");
  return `trainable params: ${fmt(trainable)} || all params: ${fmt(total)} || trainable%: ${((100 * trainable) / total).toFixed(4)}`;
}

async function run(o: Opened, input: SettingInput, resume: boolean): Promise<void> {
  stopRequested = false;
  const s = settingsOf(input);
  const config = o.model.config;
  const family = modelFamily(config);
  const model = loadBase(o, s);
  const seqLen = (s["seq-len"] as number | null) ?? Math.min(contextLength(config), 2048);
  const rows = prepare(o, o.train, s, seqLen, "training", model.vocabSize);
  const allVal = prepare(o, o.valid, s, seqLen, "validation", model.vocabSize);
  const cap = (s["val-batches"] as number) * (s["batch-size"] as number);
  const valid = cap > 0 ? allVal.slice(0, cap) : allVal;
  const saved = resume ? await OpfsRunStorage.saved() : null;
  if (resume && !saved) throw new Error("no stored checkpoint to resume; press train to start a new run");
  if (saved) {
    // as lora train --resume: only the settings that do not change what is trained may differ
    const diffs = settingDiffs(settingsOf(saved.source.settings as SettingInput), s);
    if (diffs.length > 0)
      throw new SettingsError(
        `the stored run was made with other settings:\n${diffs.join("\n")}\nset them back to resume it, or press "discard stored run" to start anew`,
      );
  }
  const state = saved
    ? parseCheckpoint(
        JSON.parse(new TextDecoder().decode(saved.files["trainer_state.json"])) as Record<string, unknown>,
        parseSafetensors(saved.files["optimizer.safetensors"]!, "optimizer.safetensors"),
        `OPFS lora-run/checkpoints/step-${saved.step}`,
      )
    : null;
  const adapter = saved
    ? {
        config: parseAdapterConfig(
          JSON.parse(new TextDecoder().decode(saved.files["adapter_config.json"])),
          "adapter_config.json",
          family.defaultTargets,
        ),
        tensors: parseSafetensors(saved.files["adapter_model.safetensors"]!, "adapter_model.safetensors")
          .tensors,
        source: `OPFS lora-run/checkpoints/step-${saved.step}`,
      }
    : null;
  if (!resume) post({ type: "sample", which: "before", text: sample(model, o) });
  const plan = planFineTune({
    settings: s,
    model,
    config,
    train: rows,
    valid,
    padId: o.model.tokenizer.padId ?? 0,
    baseModelName: o.model.name,
    adapter,
    resume: state,
    record: { seq_len: seqLen },
  });
  const storage = saved
    ? await OpfsRunStorage.resume(saved.step)
    : await OpfsRunStorage.create({
        source: o.source.kind === "demo" ? "demo" : o.model.name,
        settings: input,
      });
  post({
    type: "plan",
    steps: plan.steps,
    firstStep: plan.firstStep,
    rows: rows.length,
    valRows: valid.length,
  });
  for (const m of storage.metrics) {
    if (typeof m.loss === "number")
      post({
        type: "step",
        step: m.step as number,
        steps: plan.steps,
        loss: m.loss,
        tokens: m.tokens as number,
        elapsedS: m.elapsed_s as number,
        tokensPerS: 0,
      });
    if (typeof m.val_loss === "number") post({ type: "eval", step: m.step as number, valLoss: m.val_loss });
  }
  if (resume) post({ type: "status", text: `resuming from step ${plan.firstStep} of ${plan.steps}` });
  let tokens0: number | null = null;
  const result = await runFineTune(
    plan,
    storage,
    (e) => {
      if (e.type === "step") {
        const i = e.info;
        // tokens per second of training steps in this session (trainS), as lora train reports it
        tokens0 ??= i.tokens - i.stepTokens;
        const tps = (i.tokens - tokens0) / Math.max(i.trainS, 1e-9);
        post({
          type: "step",
          step: i.step,
          steps: i.totalSteps,
          loss: i.loss,
          tokens: i.tokens,
          elapsedS: i.trainS,
          tokensPerS: tps,
        });
      } else if (e.type === "eval") post({ type: "eval", step: e.info.step, valLoss: e.info.valLoss });
      else if (e.type === "eval-row")
        post({ type: "status", text: `held-out loss: ${e.done}/${e.total} rows` });
      else post({ type: "checkpoint", step: e.step });
    },
    // the job checkpoints the step it stopped at, so a resume loses no step
    { shouldStop: () => stopRequested },
  );
  if (result?.stopped) {
    const back = await OpfsRunStorage.saved();
    post({
      type: "status",
      text: `stopped at step ${result.steps}; resume continues from the checkpoint at step ${back?.step ?? 0}`,
    });
    return;
  }
  // a run resumed at its last step only writes its outputs: its held-out loss is measured here
  if (plan.firstStep >= plan.steps)
    post({ type: "eval", step: plan.steps, valLoss: evaluate(model, valid).loss });
  post({ type: "sample", which: "after", text: sample(model, o) });
  lastAdapter = adapterFiles(plan.trained, plan.lora!, o.model.name);
  lastTrained = plan.trained;
  post({ type: "done", adapter: lastAdapter, stopped: false });
}

/** The trained adapter as llama.cpp's GGUF LoRA adapter (f32), as `lora export --format gguf` writes it:
 *  from the trained model's LoRA layers, in its module order. */
function gguf(o: Opened): Uint8Array {
  if (!lastTrained) throw new Error("no trained adapter yet: train first");
  return ggufAdapterFromModel(lastTrained, o.model.config, {
    source: "the trained adapter",
    modelSource: `${o.model.name}/config.json`,
  }).bytes;
}

/** The merged model folder as a zip: the base with the trained adapter merged in, and the tokenizer files. */
async function merged(o: Opened): Promise<Uint8Array> {
  if (!lastAdapter) throw new Error("no trained adapter yet: train first");
  const family = modelFamily(o.model.config);
  const { model } = loadModelFromTensors(o.model.config, o.tensors, o.model.name, { baseDtype: "f32" });
  const config = parseAdapterConfig(
    JSON.parse(lastAdapter["adapter_config.json"] as string),
    "adapter_config.json",
    family.defaultTargets,
  );
  const tensors = parseSafetensors(
    lastAdapter["adapter_model.safetensors"] as Uint8Array,
    "adapter_model.safetensors",
  ).tensors;
  attachAdapter(model, config, tensors, "the trained adapter");
  mergeLoRA(model);
  fuseLoRA(model);
  const files: Record<string, Uint8Array> = {
    "config.json": new TextEncoder().encode(`${JSON.stringify(o.model.config, null, 2)}\n`),
    "model.safetensors": serializeSafetensors(modelTensors(model, o.model.config, o.tensors), {
      format: "pt",
    }),
  };
  for (const f of o.model.tokenizerFiles) files[f.name] = new Uint8Array(await f.blob.arrayBuffer());
  return zipSync(files, { level: 0 });
}

self.onmessage = async (ev: MessageEvent<ToWorker>) => {
  const m = ev.data;
  if (m.type === "stop") {
    stopRequested = true;
    return;
  }
  try {
    if (m.type === "open") {
      const mine = ++openSeq;
      opened = null;
      lastAdapter = null;
      lastTrained = null;
      let o: Opened;
      try {
        await useBackend(m.threads);
        o = await open(m.source);
      } catch (e) {
        if (mine === openSeq) throw e;
        return;
      }
      if (mine !== openSeq) return;
      opened = o;
      const saved = await OpfsRunStorage.saved();
      const sameSource =
        saved && saved.source.source === (m.source.kind === "demo" ? "demo" : opened.model.name);
      const cfg = opened.model.config;
      post({
        type: "opened",
        summary: `${opened.model.name}: ${cfg.model_type}, ${cfg.num_hidden_layers ?? cfg.n_layer} layers, width ${cfg.hidden_size ?? cfg.n_embd}, ${opened.model.size.parameters.toLocaleString("en-US")} parameters; ${opened.train.length} training rows, ${opened.valid.length} held-out rows`,
        threads: threadsLine(),
        saved: sameSource
          ? { step: saved.step, steps: Number((saved.source.settings as SettingInput).steps) || 0 }
          : null,
      });
    } else if (!opened) throw new Error("pick a model and data first (or use the demo)");
    else if (m.type === "report") post({ type: "report", line: report(opened, m.settings) });
    else if (m.type === "train") await run(opened, m.settings, m.resume);
    else if (m.type === "gguf") post({ type: "gguf", bytes: gguf(opened) });
    else if (m.type === "merge") post({ type: "merged", zip: await merged(opened) });
    else if (m.type === "discard") {
      await OpfsRunStorage.clear();
      post({ type: "status", text: "the stored run is discarded: press train to start anew" });
    }
  } catch (e) {
    const err = e as Error;
    const message =
      err instanceof SettingsError ? err.message.replaceAll("--", "") : (err?.message ?? String(e));
    post({ type: "error", message });
  }
};
