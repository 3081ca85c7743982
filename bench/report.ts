/** The bench's results: the record written as JSON, and the tables printed from it. */
import type { ChildResult, GemmShape } from "./spec.js";

export interface LossCheck {
  ours: number;
  torch: number;
  /** |ours - torch| / |torch| of the step-0 loss (same weights, same batch, before any update). */
  relDiff: number;
  /** relDiff <= rtol (LOSS_RTOL by dtype). */
  ok: boolean;
  rtol: number;
  /** The same for the last step's loss (after warm-up + timed AdamW updates). */
  lastRelDiff: number;
}

export interface RunRecord {
  model: string;
  label: string;
  note?: string;
  threads: number;
  /** Our configuration, backend/base-dtype (e.g. native/bf16). */
  variant: string;
  batch: number;
  seq: number;
  ours: ChildResult | null;
  torch: ChildResult | null;
  /** transformers + PEFT on the same weights (bench/peft_bench.py), where LORA_BENCH_PEFT_PYTHON has them. */
  peft?: ChildResult | null;
  lossCheck: LossCheck | null;
  /** The same check against the PEFT peer. */
  peftLossCheck?: LossCheck | null;
  /** How many greedy tokens agree from the start. */
  genAgree: number | null;
  errors: string[];
}

/** Step-0 loss agreement: f32 on both sides, or our 16-bit frozen weights (bf16 products) against torch f32. */
export const LOSS_RTOL = { f32: 1e-3, "16-bit": 1e-2 } as const;

export function lossCheck(ours: ChildResult, torch: ChildResult, kind: keyof typeof LOSS_RTOL): LossCheck {
  const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
  const [o, t] = [ours.train.losses, torch.train.losses];
  const relDiff = rel(o[0]!, t[0]!);
  return {
    ours: o[0]!,
    torch: t[0]!,
    relDiff,
    ok: relDiff <= LOSS_RTOL[kind],
    rtol: LOSS_RTOL[kind],
    lastRelDiff: rel(o[o.length - 1]!, t[t.length - 1]!),
  };
}

export function genAgree(ours: ChildResult, torch: ChildResult): number | null {
  if (!ours.gen || !torch.gen) return null;
  let n = 0;
  while (n < ours.gen.tokens.length && ours.gen.tokens[n] === torch.gen.tokens[n]) n++;
  return n;
}

const fmt = (x: number | undefined | null, digits = 1) =>
  x === undefined || x === null || !Number.isFinite(x) ? "-" : x.toFixed(digits);
const ratio = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined ? "-" : `${a / b >= 1 ? (a / b).toFixed(2) : (a / b).toPrecision(2)}x`;

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padStart(widths[i]!)).join(" | ")} |`;
  return [line(head), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)].join("\n");
}

export function mainTable(runs: RunRecord[]): string {
  const rows = runs.map((r) => {
    const [o, t, p] = [r.ours, r.torch, r.peft ?? null];
    // the faster peer, per model and thread count (issue #12's target)
    const peer = (get: (c: ChildResult) => number | undefined) =>
      Math.max(...[t, p].map((c) => (c ? (get(c) ?? 0) : 0))) || undefined;
    const peerTrain = peer((c) => c.train.tokPerSec);
    const gen = r.genAgree === null ? "" : `, gen ${r.genAgree}/${o?.gen?.newTokens ?? 0} same`;
    const check = r.lossCheck
      ? `${r.lossCheck.ok ? "ok" : "MISMATCH"} ${r.lossCheck.ours.toFixed(6)} / ${r.lossCheck.torch.toFixed(6)}${gen}`
      : "-";
    return [
      r.model,
      `${r.batch}x${r.seq}`,
      String(r.threads),
      r.variant,
      fmt(o?.train.tokPerSec),
      fmt(t?.train.tokPerSec),
      ratio(o?.train.tokPerSec, t?.train.tokPerSec),
      fmt(p?.train.tokPerSec),
      ratio(o?.train.tokPerSec, peerTrain),
      fmt(o?.train.peakRssMiB, 0),
      fmt(t?.train.peakRssMiB, 0),
      fmt(p?.train.peakRssMiB, 0),
      fmt(o?.gen?.tokPerSec),
      fmt(t?.gen?.tokPerSec),
      fmt(p?.gen?.tokPerSec),
      ratio(
        o?.gen?.tokPerSec,
        peer((c) => c.gen?.tokPerSec),
      ),
      check,
    ];
  });
  return table(
    [
      "model",
      "BxT",
      "thr",
      "ours",
      "ours tok/s",
      "torch tok/s",
      "ours/torch",
      "peft tok/s",
      "ours/faster peer",
      "ours MiB",
      "torch MiB",
      "peft MiB",
      "ours gen tok/s",
      "torch gen tok/s",
      "peft gen tok/s",
      "gen ours/faster peer",
      "step-0 loss ours / torch (check)",
    ],
    rows,
  );
}

const gflop = (s: GemmShape) => (2 * s.batch * s.M * s.N * s.K) / 1e9;

function shapeName(s: GemmShape): string {
  const op = `${s.transA ? "T" : "N"}${s.transB ? "T" : "N"}${s.accumulate ? "+" : ""}`;
  const half = s.bDtype && s.bDtype !== "f32" ? ` (${s.bDtype} b)` : "";
  return `${s.batch > 1 ? `${s.batch}x ` : ""}${s.M}x${s.K} @ ${s.K}x${s.N} ${op}${half}`;
}

export function gemmTable(r: RunRecord): string {
  const shapes = r.ours?.gemm ?? [];
  const stepMs = shapes.reduce((a, s) => a + s.callsPerStep * s.ms, 0);
  const stepFlop = shapes.reduce((a, s) => a + s.callsPerStep * gflop(s), 0);
  const rows = shapes.map((s) => [
    shapeName(s),
    String(s.callsPerStep),
    (s.callsPerStep * gflop(s)).toPrecision(3),
    fmt(s.ms, 2),
    fmt(s.gflops, 2),
  ]);
  const measured = r.ours?.train.medianMs;
  const share = measured ? ` = ${((100 * stepMs) / measured).toFixed(0)}% of the measured step` : "";
  return [
    `GEMMs of one training step, ${r.model} ${r.threads} thread(s), ${r.variant}: ${shapes.length} shapes, ` +
      `${shapes.reduce((a, s) => a + s.callsPerStep, 0)} calls, ${stepFlop.toFixed(2)} GFLOP; ` +
      `timed one by one they take ${stepMs.toFixed(0)} ms (${(stepFlop / (stepMs / 1000)).toFixed(2)} GFLOP/s)${share} ` +
      "(attention runs in the backend's attention kernels, not in matmul)",
    table(["shape (M x K @ K x N, op)", "calls/step", "GFLOP/step", "ms/call", "GFLOP/s"], rows),
  ].join("\n");
}
