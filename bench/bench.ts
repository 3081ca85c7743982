/**
 * `npm run bench`: LoRA training throughput, peak memory, greedy generation and the GEMM table of
 * our library, each configuration in a child process (LORA_BACKEND, LORA_THREADS), side by side
 * with the same step in PyTorch when /usr/bin/python3 has torch. See bench/README.md.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type BenchOptions, parseBenchArgs, stepSpec, USAGE } from "./args.js";
import { NODE_FLAGS, probeTorch, runOurs, runTorch } from "./children.js";
import { type ModelPreset, preset } from "./models.js";
import { gemmTable, genAgree, LOSS_RTOL, lossCheck, mainTable, type RunRecord } from "./report.js";
import type { StepSpec } from "./spec.js";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const log = (s: string) => process.stderr.write(`${s}\n`);
const errText = (e: unknown) => (e instanceof Error ? e.message : String(e));

function emptyRecord(p: ModelPreset, spec: StepSpec, threads: number): RunRecord {
  const base = { model: p.id, label: p.label, threads, batch: spec.batch, seq: spec.seq };
  return {
    ...base,
    ...(p.note ? { note: p.note } : {}),
    ours: null,
    torch: null,
    lossCheck: null,
    genAgree: null,
    errors: [],
  };
}

/** Every thread count of one model: ours, then torch on the weights ours wrote. */
function runModel(id: string, o: BenchOptions, torchOk: boolean): RunRecord[] {
  const p = preset(id);
  const spec = stepSpec(p, o);
  const dir = mkdtempSync(join(tmpdir(), "lora-bench-"));
  const records: RunRecord[] = [];
  try {
    // Only the torch side reads the weights file, so without torch nothing is written.
    let weightsWritten = !torchOk;
    for (const threads of o.threads) {
      const rec = emptyRecord(p, spec, threads);
      records.push(rec);
      log(`${id} (${p.label}), B=${spec.batch} T=${spec.seq}, ${threads} thread(s): ours ...`);
      try {
        rec.ours = runOurs({ ...spec, ...(weightsWritten ? {} : { weightsOut: dir }) }, threads, o.backend);
        weightsWritten = true;
        log(`  ours: ${rec.ours.train.tokPerSec.toFixed(1)} tok/s (${rec.ours.backend})`);
      } catch (e) {
        rec.errors.push(errText(e));
        log(`  ${errText(e)}`);
      }
      if (!torchOk || !weightsWritten) continue;
      log("  torch ...");
      try {
        rec.torch = runTorch(spec, dir, threads);
        log(`  torch: ${rec.torch.train.tokPerSec.toFixed(1)} tok/s`);
      } catch (e) {
        rec.errors.push(errText(e));
        log(`  ${errText(e)}`);
      }
      if (rec.ours && rec.torch) {
        rec.lossCheck = lossCheck(rec.ours, rec.torch);
        rec.genAgree = genAgree(rec.ours, rec.torch);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return records;
}

function main(): number {
  let o: BenchOptions | null;
  try {
    o = parseBenchArgs(process.argv.slice(2), join(repoRoot, "bench", "results", "latest.json"));
    for (const id of o?.models ?? []) preset(id);
  } catch (e) {
    log(`bench: ${errText(e)}\n\n${USAGE}`);
    return 2;
  }
  if (!o) {
    console.log(USAGE);
    return 0;
  }
  const torch = o.torch ? probeTorch() : { version: null, reason: "--no-torch" };
  if (!torch.version) log(`PyTorch side skipped: ${torch.reason}`);
  if (torch.warning) log(`WARNING: ${torch.warning}`);

  const runs = o.models.flatMap((id) => runModel(id, o, torch.version !== null));
  const first = runs.find((r) => r.ours)?.ours;
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    nodeFlags: NODE_FLAGS,
    backend: first?.backend ?? null,
    backendInfo: first?.backendInfo ?? {},
    /** The backend's own relaxed-SIMD field (any name containing "relaxed"), when it has one. */
    relaxedSimd: Object.entries(first?.backendInfo ?? {}).find(([k]) => /relaxed/i.test(k))?.[1] ?? null,
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    torch: torch.version,
    torchBlas: torch.blas ?? null,
    timing:
      "per configuration: warm-up steps, then timed steps; step time = median of the timed steps " +
      "(forward + backward + AdamW + zero grad); tok/s = batch*seq / median; peak = maxRSS after training; " +
      "generation tok/s = new tokens / whole generate call (prefill included), batch 1, greedy, KV cache",
  };
  const result = { meta, options: { ...o, backend: o.backend ?? null }, runs };
  mkdirSync(dirname(resolve(o.out)), { recursive: true });
  writeFileSync(resolve(o.out), `${JSON.stringify(result, null, 2)}\n`);

  console.log(`\nLoRA r=8 alpha=16, AdamW, fp32; backend ${meta.backend} (${meta.cpu}, ${meta.node})`);
  if (torch.version) console.log(`torch ${torch.version}, BLAS ${torch.blas?.join(", ") || "unknown"}`);
  console.log(`${meta.timing}\n`);
  console.log(mainTable(runs));
  for (const p of new Set(runs.map((r) => r.note).filter(Boolean))) console.log(`note: ${p}`);
  for (const r of runs) {
    if (r.lossCheck && !r.lossCheck.ok) {
      console.log(
        `MISMATCH ${r.model} ${r.threads}T: step-0 loss differs by ${r.lossCheck.relDiff.toExponential(2)} relative (> ${LOSS_RTOL}): the two sides do not compute the same step`,
      );
    }
  }
  if (torch.warning) console.log(`WARNING: ${torch.warning}`);
  for (const r of runs) if (r.ours?.gemm) console.log(`\n${gemmTable(r)}`);
  const errors = runs.flatMap((r) => r.errors);
  for (const e of errors) console.log(`\nerror: ${e}`);
  console.log(`\nwrote ${resolve(o.out)}`);
  return errors.length > 0 ? 1 : 0;
}

process.exitCode = main();
