/**
 * The page: picks the inputs, shows the settings (the CLI's table and defaults), and drives the
 * training worker; it draws progress, the live loss chart (uPlot), results and downloads.
 */
import { zipSync } from "fflate";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { SETTINGS } from "../../src/train/settings.js";
import type { NamedBlob } from "./model-files.js";
import type { FromWorker, SettingInput, Source, ToWorker } from "./protocol.js";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const form = $<HTMLFormElement>("settings");
const status = $("status");
const buttons = {
  train: $<HTMLButtonElement>("train"),
  stop: $<HTMLButtonElement>("stop"),
  adapter: $<HTMLButtonElement>("download-adapter"),
  merged: $<HTMLButtonElement>("download-merged"),
  gguf: $<HTMLButtonElement>("download-gguf"),
};

/** Threads to train on: ?threads=N, else every core the browser reports (one without cross-origin isolation). */
const THREADS =
  Number(new URLSearchParams(location.search).get("threads")) || navigator.hardwareConcurrency || 1;

// The settings the page shows, with the CLI's defaults (src/train/settings.ts).
const SHOWN = [
  "steps",
  "rank",
  "alpha",
  "lr",
  "targets",
  "batch-size",
  "seq-len",
  "seed",
  "save-every",
  "eval-every",
  "val-batches",
] as const;
for (const name of SHOWN) {
  const spec = SETTINGS[name] as { def?: unknown };
  const input = form.elements.namedItem(name) as HTMLInputElement;
  if (spec.def !== undefined) input.value = String(spec.def);
}
/** npm start's settings for the demo (examples/quickstart.ts): all-linear r=8, alpha 16, lr 3e-3, batches of 8. */
const DEMO_SETTINGS: Record<string, string> = {
  steps: "120",
  rank: "8",
  alpha: "16",
  lr: "0.003",
  targets: "all-linear",
  "batch-size": "8",
};

function settings(): SettingInput {
  const out: SettingInput = {};
  for (const name of SHOWN) {
    const v = (form.elements.namedItem(name) as HTMLInputElement).value.trim();
    if (v !== "") out[name] = v;
  }
  return out;
}

let worker: Worker;
let busy = false;
let source: Source | null = null;
let adapter: Record<string, Uint8Array | string> | null = null;
let lastSource: Source | null = null;

function setStatus(text: string, error = false) {
  status.textContent = error ? `error: ${text}` : text;
  status.classList.toggle("error", error);
}

function setBusy(b: boolean) {
  busy = b;
  buttons.train.disabled = b || !source;
  buttons.stop.disabled = !b;
  $<HTMLButtonElement>("use-demo").disabled = b;
}

// --- the live loss chart: train loss at every step, held-out loss where it was measured
const steps: number[] = [];
const train: (number | null)[] = [];
const valid: (number | null)[] = [];
const chartEl = $("loss-chart");
const chart = new uPlot(
  {
    width: Math.min(940, chartEl.clientWidth || 940),
    height: 260,
    scales: { x: { time: false } },
    axes: [{ label: "step" }, { label: "loss" }],
    series: [
      { label: "step" },
      { label: "train", stroke: "#2a6fdb", width: 1.5, spanGaps: true },
      { label: "held-out", stroke: "#e8710a", width: 2, points: { show: true, size: 6 }, spanGaps: true },
    ],
  },
  [[], [], []],
  chartEl,
);
function resetChart() {
  steps.length = train.length = valid.length = 0;
  chart.setData([[], [], []]);
}
function plot(step: number, loss: number | null, val: number | null) {
  let i = steps.indexOf(step);
  if (i < 0) {
    steps.push(step);
    train.push(null);
    valid.push(null);
    i = steps.length - 1;
  }
  if (loss !== null) train[i] = loss;
  if (val !== null) valid[i] = val;
  chart.setData([steps, train, valid]);
}

let firstVal: number | null = null;
let totalSteps = 0;
let startStep = 0;

function onMessage(m: FromWorker) {
  switch (m.type) {
    case "opened":
      $("summary").textContent = m.summary;
      $("threads").textContent = m.threads;
      setBusy(false);
      setStatus(
        m.saved
          ? `ready; a stored run of this model is at step ${m.saved.step}: press train to resume it`
          : "ready: press train",
      );
      setResume(m.saved !== null);
      post({ type: "report", settings: settings() });
      break;
    case "report":
      $("param-line").textContent = m.line;
      break;
    case "status":
      setStatus(m.text);
      break;
    case "sample":
      $(`sample-${m.which}`).textContent = m.text;
      break;
    case "plan":
      totalSteps = m.steps;
      startStep = m.firstStep;
      setStatus(`training: ${m.rows} rows, ${m.valRows} held-out rows, ${m.steps} steps`);
      break;
    case "step": {
      plot(m.step, m.loss, null);
      if (m.tokensPerS > 0) {
        const left = ((m.steps - m.step) * m.elapsedS) / Math.max(m.step - startStep, 1);
        const mem = (performance as { memory?: { usedJSHeapSize: number } }).memory;
        $("progress").textContent =
          `step ${m.step}/${m.steps} · loss ${m.loss.toFixed(4)} · ${Math.round(m.tokensPerS).toLocaleString("en-US")} tokens/s · ETA ${left.toFixed(0)} s` +
          (mem ? ` · main-thread heap ${(mem.usedJSHeapSize / 2 ** 20).toFixed(0)} MiB` : "");
        setStatus(`training: step ${m.step} of ${m.steps}`);
      }
      break;
    }
    case "eval":
      plot(m.step, null, m.valLoss);
      if (firstVal === null) {
        firstVal = m.valLoss;
        $("val-before").textContent = m.valLoss.toFixed(4);
      }
      if (m.step >= totalSteps) $("val-after").textContent = m.valLoss.toFixed(4);
      break;
    case "checkpoint":
      break;
    case "done":
      adapter = m.adapter;
      setResume(false);
      setBusy(false);
      buttons.adapter.disabled = buttons.merged.disabled = buttons.gguf.disabled = false;
      setStatus(`done: ${totalSteps} steps; the adapter is ready to download`);
      break;
    case "merged":
      save(new Blob([m.zip as Uint8Array<ArrayBuffer>], { type: "application/zip" }), "merged-model.zip");
      setStatus("done: merged model downloaded");
      buttons.merged.disabled = false;
      break;
    case "gguf":
      save(
        new Blob([m.bytes as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }),
        "adapter.gguf",
      );
      setStatus("done: GGUF adapter downloaded");
      buttons.gguf.disabled = false;
      break;
    case "error":
      setBusy(false);
      if (m.message === "stopped") break;
      setStatus(m.message, true);
      break;
  }
  if (m.type === "status" && m.text.startsWith("stopped")) {
    setBusy(false);
    setResume(true);
  }
  if (m.type === "status" && m.text.startsWith("the stored run is discarded")) setResume(false);
}

let resumeReady = false;
const discard = $<HTMLButtonElement>("discard-run");
/** With a stored, unfinished run, train resumes it; discard removes it. */
function setResume(on: boolean) {
  resumeReady = on;
  buttons.train.textContent = on ? "Resume" : "Train";
  discard.hidden = !on;
}
discard.addEventListener("click", () => post({ type: "discard" }));

function startWorker() {
  worker?.terminate();
  worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
  worker.onmessage = (e: MessageEvent<FromWorker>) => onMessage(e.data);
  // an error the worker did not catch (a failed import, an out-of-memory) is shown, never swallowed
  worker.onerror = (e) => {
    setBusy(false);
    setStatus(`the training worker failed: ${e.message || "unknown error (see the browser console)"}`, true);
  };
  worker.onmessageerror = () => setStatus("a message from the training worker could not be read", true);
}
const post = (m: ToWorker) => worker.postMessage(m);

function open(s: Source) {
  source = null;
  lastSource = s;
  adapter = null;
  firstVal = null;
  resetChart();
  for (const id of ["val-before", "val-after", "sample-before", "sample-after"]) $(id).textContent = "–";
  buttons.adapter.disabled = buttons.merged.disabled = buttons.gguf.disabled = true;
  setBusy(true);
  buttons.stop.disabled = true;
  setStatus("loading the model and data…");
  source = s;
  post({ type: "open", source: s, threads: THREADS });
}

$("use-demo").addEventListener("click", () => {
  for (const [k, v] of Object.entries(DEMO_SETTINGS))
    (form.elements.namedItem(k) as HTMLInputElement).value = v;
  open({ kind: "demo" });
});

// --- a model folder and a data file, picked or dropped
let modelFiles: { folder: string; files: NamedBlob[] } | null = null;
let dataFile: NamedBlob | null = null;
function tryOpenFiles() {
  if (modelFiles && dataFile)
    open({ kind: "files", folder: modelFiles.folder, model: modelFiles.files, data: dataFile });
  else setStatus(modelFiles ? "now pick a data file (.txt or .jsonl)" : "now pick a model folder");
}
$<HTMLInputElement>("model-input").addEventListener("change", (e) => {
  const list = [...((e.target as HTMLInputElement).files ?? [])];
  const folder = list[0]?.webkitRelativePath.split("/")[0] ?? "model";
  // only the folder's own files (not subfolders), by their names
  const files = list
    .filter((f) => f.webkitRelativePath.split("/").length === 2)
    .map((f) => ({ name: f.name, blob: f as Blob }));
  modelFiles = { folder, files };
  tryOpenFiles();
});
$<HTMLInputElement>("data-input").addEventListener("change", (e) => {
  const f = (e.target as HTMLInputElement).files?.[0];
  if (f) dataFile = { name: f.name, blob: f };
  tryOpenFiles();
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const entries = [...(e.dataTransfer?.items ?? [])]
    .map((i) => i.webkitGetAsEntry())
    .filter((x) => x !== null);
  const fileOf = (f: FileSystemFileEntry) => new Promise<File>((res, rej) => f.file(res, rej));
  for (const entry of entries) {
    if (entry.isDirectory) {
      const reader = (entry as FileSystemDirectoryEntry).createReader();
      const children = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
      const files = await Promise.all(
        children
          .filter((c) => c.isFile)
          .map(async (c) => ({ name: c.name, blob: (await fileOf(c as FileSystemFileEntry)) as Blob })),
      );
      modelFiles = { folder: entry.name, files };
    } else dataFile = { name: entry.name, blob: await fileOf(entry as FileSystemFileEntry) };
  }
  tryOpenFiles();
});

form.addEventListener("input", () => {
  if (source && !busy) post({ type: "report", settings: settings() });
});

buttons.train.addEventListener("click", () => {
  if (!source) return;
  setBusy(true);
  buttons.adapter.disabled = buttons.merged.disabled = buttons.gguf.disabled = true;
  if (!resumeReady) {
    firstVal = null;
    resetChart();
    $("val-after").textContent = $("sample-after").textContent = "–";
  } else resetChart();
  setStatus(resumeReady ? "resuming…" : "starting…");
  post({ type: "train", settings: settings(), resume: resumeReady });
});
buttons.stop.addEventListener("click", () => {
  buttons.stop.disabled = true;
  setStatus("stopping after this step…");
  post({ type: "stop" });
});

function save(blob: Blob, name: string) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}
buttons.adapter.addEventListener("click", () => {
  if (!adapter) return;
  const files = Object.fromEntries(
    Object.entries(adapter).map(([k, v]) => [k, typeof v === "string" ? new TextEncoder().encode(v) : v]),
  );
  save(
    new Blob([zipSync(files, { level: 6 }) as Uint8Array<ArrayBuffer>], { type: "application/zip" }),
    "adapter.zip",
  );
});
buttons.gguf.addEventListener("click", () => {
  buttons.gguf.disabled = true;
  post({ type: "gguf" });
});
buttons.merged.addEventListener("click", () => {
  buttons.merged.disabled = true;
  setStatus("merging the adapter into the base model…");
  post({ type: "merge" });
});

startWorker();
void lastSource;
