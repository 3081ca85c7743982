/**
 * `npm run bench`: LoRA training throughput, peak memory, greedy generation and the GEMM table of
 * our library, each configuration in a child process (LORA_BACKEND, LORA_THREADS), side by side
 * with the same step in PyTorch when /usr/bin/python3 has torch. See bench/README.md.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { nativeAddon } from "../src/kernels/native/node/addon.js";
import { type BenchOptions, parseBenchArgs, stepSpec, USAGE, variantName } from "./args.js";
import {
  NODE_FLAGS,
  PEFT_PEER,
  type Peer,
  peerIsaEnv,
  probeTorch,
  runOurs,
  runTorch,
  TORCH_PEER,
} from "./children.js";
import { type ModelPreset, preset } from "./models.js";
import { gemmTable, genAgree, lossCheck, mainTable, type RunRecord } from "./report.js";
import type { ChildResult, StepSpec } from "./spec.js";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const log = (s: string) => process.stderr.write(`${s}\n`);
const errText = (e: unknown) => (e instanceof Error ? e.message : String(e));

function emptyRecord(p: ModelPreset, spec: StepSpec, threads: number, variant: string): RunRecord {
  const base = { model: p.id, label: p.label, threads, variant, batch: spec.batch, seq: spec.seq };
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

/** Every thread count of one model: each of our variants, then each peer once on the weights ours wrote. */
function runModel(id: string, o: BenchOptions, torchOk: boolean, peft: Peer | null): RunRecord[] {
  const p = preset(id);
  const spec = stepSpec(p, o);
  const dir = mkdtempSync(join(tmpdir(), "lora-bench-"));
  const records: RunRecord[] = [];
  try {
    // Only the Python peers read the weights file, so without them nothing is written.
    let weightsWritten = !torchOk && !peft;
    for (const threads of o.threads) {
      const group: RunRecord[] = [];
      for (const v of o.variants) {
        const rec = emptyRecord(p, spec, threads, variantName(v));
        group.push(rec);
        log(
          `${id} (${p.label}), B=${spec.batch} T=${spec.seq}, ${threads} thread(s): ours ${rec.variant} ...`,
        );
        try {
          // the weights file holds f32 weights: only an f32 configuration writes it (variants sort f32 first)
          const write = !weightsWritten && v.baseDtype === "f32";
          rec.ours = runOurs(
            { ...spec, baseDtype: v.baseDtype, ...(write ? { weightsOut: dir } : {}) },
            threads,
            v.backend,
          );
          weightsWritten ||= write;
          log(
            `  ours: ${rec.ours.train.tokPerSec.toFixed(1)} tok/s (${rec.ours.backend}, ${v.baseDtype} base)`,
          );
        } catch (e) {
          rec.errors.push(errText(e));
          log(`  ${errText(e)}`);
        }
      }
      records.push(...group);
      if (!weightsWritten) continue;
      const runPeer = (peer?: Peer): ChildResult | null => {
        if (!peer) return null;
        log(`  ${peer.name} ...`);
        try {
          const r = runTorch(spec, dir, threads, peer);
          log(`  ${peer.name}: ${r.train.tokPerSec.toFixed(1)} tok/s`);
          return r;
        } catch (e) {
          group[0]!.errors.push(errText(e));
          log(`  ${errText(e)}`);
          return null;
        }
      };
      const torch = torchOk ? runPeer(TORCH_PEER) : null;
      const peftRun = runPeer(peft ?? undefined);
      for (const rec of group) {
        rec.torch = torch;
        rec.peft = peftRun;
        const kind = rec.variant.endsWith("/f32") ? "f32" : "16-bit";
        if (rec.ours && torch) {
          rec.lossCheck = lossCheck(rec.ours, torch, kind);
          rec.genAgree = genAgree(rec.ours, torch);
        }
        if (rec.ours && peftRun) rec.peftLossCheck = lossCheck(rec.ours, peftRun, kind);
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
    const variants = nativeAddon() ? "native/f32,native/bf16,wasm/f32" : "wasm/f32";
    o = parseBenchArgs(process.argv.slice(2), join(repoRoot, "bench", "results", "latest.json"), variants);
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
  const peft = !o.torch
    ? { version: null, reason: "--no-torch" }
    : PEFT_PEER
      ? probeTorch(PEFT_PEER)
      : {
          version: null,
          reason:
            "LORA_BENCH_PEFT_PYTHON is not set (a python with torch, transformers and peft: python3 -m venv V && V/bin/pip install torch transformers peft)",
        };
  if (!peft.version) log(`transformers + PEFT side skipped: ${peft.reason}`);

  const runs = o.models.flatMap((id) =>
    runModel(id, o, torch.version !== null, peft.version ? PEFT_PEER : null),
  );
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
    peft: peft.version,
    peftBlas: peft.blas ?? null,
    /** What held the peers to our forced ISA level (children.ts peerIsaEnv); {} when none was forced. */
    peerIsaEnv: peerIsaEnv(),
    timing:
      "per configuration: warm-up steps, then timed steps; step time = median of the timed steps " +
      "(forward + backward + AdamW + zero grad); tok/s = batch*seq / median; peak = maxRSS after training; " +
      "generation tok/s = new tokens / whole generate call (prefill included), batch 1, greedy, KV cache",
  };
  const result = { meta, options: o, runs };
  mkdirSync(dirname(resolve(o.out)), { recursive: true });
  writeFileSync(resolve(o.out), `${JSON.stringify(result, null, 2)}\n`);

  console.log(
    `\nLoRA r=8 alpha=16, AdamW; ours: ${o.variants.map(variantName).join(", ")} (backend/frozen-weight dtype; ` +
      `LoRA, activations and optimizer f32); torch fp32 (${meta.cpu}, ${meta.node})`,
  );
  if (torch.version) console.log(`torch ${torch.version}, BLAS ${torch.blas?.join(", ") || "unknown"}`);
  if (peft.version) console.log(`peft: ${peft.version}, BLAS ${peft.blas?.join(", ") || "unknown"}`);
  if (Object.keys(meta.peerIsaEnv).length)
    console.log(
      `peers held to LORA_ISA=${process.env.LORA_ISA}: ${Object.entries(meta.peerIsaEnv)
        .map(([k, v]) => `${k}=${v}`)
        .join(" ")}`,
    );
  console.log(`${meta.timing}\n`);
  console.log(mainTable(runs));
  for (const p of new Set(runs.map((r) => r.note).filter(Boolean))) console.log(`note: ${p}`);
  for (const r of runs)
    for (const [peer, c] of [
      ["torch", r.lossCheck],
      ["peft", r.peftLossCheck],
    ] as const) {
      if (c && !c.ok)
        console.log(
          `MISMATCH ${r.model} ${r.threads}T ${r.variant} against ${peer}: step-0 loss differs by ${c.relDiff.toExponential(2)} relative (> ${c.rtol}): the two sides do not compute the same step`,
        );
      if (c?.ok && peer === "peft")
        console.log(
          `${r.model} ${r.threads}T ${r.variant}: step-0 loss ours ${c.ours.toFixed(6)}, transformers + PEFT ${c.torch.toFixed(6)} (ok)`,
        );
    }
  if (torch.warning) console.log(`WARNING: ${torch.warning}`);
  for (const r of runs) if (r.ours?.gemm) console.log(`\n${gemmTable(r)}`);
  const errors = runs.flatMap((r) => r.errors);
  for (const e of errors) console.log(`\nerror: ${e}`);
  console.log(`\nwrote ${resolve(o.out)}`);
  return errors.length > 0 ? 1 : 0;
}

process.exitCode = main();
