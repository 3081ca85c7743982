/**
 * The paper's experiments at small scale (Hu et al. 2021): what each trains, and what its report says.
 *
 *   targets  Table 5: a fixed parameter budget spread over {q}, {k}, {v}, {o}, {q,k}, {q,v}, {q,k,v,o}
 *   rank     Table 6 and Section 7.2: r from 1 to 64 on {q,v}; the subspace similarity of A_{r=8}
 *            and A_{r=64}, and of two seeds at r=64
 *   full     LoRA (q,v at r=8) against full fine-tuning on the same data and steps: loss, trainable
 *            parameters, optimizer state, peak memory, step time and the saved result's size
 *   delta    Section 7.3, Table 7: how ΔW_q of the rank experiment's r=4 and r=64 adapters relates
 *            to W_q (the same runs: `all` trains them once)
 *
 * An experiment is a list of runs (each a key and its settings) and an analysis of their outcomes;
 * the shell runs what is not done yet and stores the results, so a rerun skips finished runs.
 */
import { LORA_DEFAULTS } from "../lora/config.js";
import { type Adaptable, findTargets } from "../lora/inject.js";
import type { SettingValues } from "../train/settings.js";
import { budgetConfigs } from "./budget.js";
import { meanSpread, type RunOutcome } from "./runs.js";
import { subspaceSimilarity } from "./subspace.js";

export const EXPERIMENTS = ["targets", "rank", "full", "delta"] as const;
export type ExperimentName = (typeof EXPERIMENTS)[number];

export interface PlannedRun {
  key: string;
  settings: SettingValues;
  /** Where to keep the A matrix (rank experiment: one attention module). */
  probe?: string;
  /** Keep Section 7.3's numbers for every adapted q_proj (rank and delta runs). */
  delta?: boolean;
}

/** The paper's matrix names, as module names of the Llama-style families. */
const ATTENTION = { q: "q_proj", k: "k_proj", v: "v_proj", o: "o_proj" } as const;
const TARGET_SETS = ["q", "k", "v", "o", "q,k", "q,v", "q,k,v,o"];
export const RANKS = [1, 2, 4, 8, 16, 32, 64];
/** The ranks of the paper's Table 7. */
export const DELTA_RANKS = [4, 64];
/** The LoRA side of `full`: q and v at rank 8, the paper's usual configuration. */
export const FULL_LORA = { targets: `${ATTENTION.q},${ATTENTION.v}`, rank: 8 };

/** Checks the model has separate q, k, v and o projections (GPT-2 and Phi-3 fuse q, k and v). */
export function attentionTargets(model: Adaptable): void {
  const names = new Set(model.namedModules().map(([p]) => p.split(".").pop()));
  const missing = Object.values(ATTENTION).filter((n) => !names.has(n));
  if (missing.length > 0)
    throw new Error(
      `these experiments adapt q_proj, k_proj, v_proj and o_proj separately, and this model has no ${missing.join(", ")} (GPT-2's c_attn and Phi-3's qkv_proj fuse them); use a Llama-style model`,
    );
}

/** The middle layer's q_proj: where the rank experiment keeps A for the subspace analysis. */
function probePath(model: Adaptable): string {
  const qs = model
    .namedModules()
    .map(([p]) => p)
    .filter((p) => p.endsWith(`.${ATTENTION.q}`));
  return qs[Math.floor(qs.length / 2)]!;
}

/** The largest rank a LoRA on these targets can have: min(in, out) over the matrices they pick. */
export function maxRank(model: Adaptable, targets: string): number {
  const picked = findTargets(model, { ...LORA_DEFAULTS, target_modules: targets.split(",") });
  return Math.min(...picked.map(([, l]) => Math.min(l.inFeatures, l.outFeatures)));
}

/**
 * The ranks of `rank` (or, `delta`, of Table 7) that fit on q and v; a rank past the cap is replaced
 * by the cap (a small model's v_proj may be narrower than 64), each rank once.
 */
export function ranksFor(model: Adaptable, ranks: readonly number[]): number[] {
  const cap = maxRank(model, `${ATTENTION.q},${ATTENTION.v}`);
  return [...new Set(ranks.map((r) => Math.min(r, cap)))];
}

export function planRuns(name: ExperimentName, model: Adaptable, seeds: number): PlannedRun[] {
  attentionTargets(model);
  const seedList = Array.from({ length: seeds }, (_, i) => i);
  if (name === "targets") {
    const sets = TARGET_SETS.map((n) => ({ name: n, targets: n.split(",").map((m) => ATTENTION[m as "q"]) }));
    const { configs } = budgetConfigs(model, sets, { targets: [ATTENTION.q], rank: 8 });
    return configs.flatMap((c) =>
      seedList.map((seed) => ({
        key: `targets/${c.name}/r${c.rank}/seed${seed}`,
        settings: {
          targets: c.targets.join(","),
          rank: String(c.rank),
          alpha: String(2 * c.rank),
          seed: String(seed),
        },
      })),
    );
  }
  if (name === "full")
    return seedList.flatMap((seed) => [
      {
        key: `full/lora/seed${seed}`,
        settings: {
          targets: FULL_LORA.targets,
          rank: String(FULL_LORA.rank),
          alpha: String(2 * FULL_LORA.rank),
          seed: String(seed),
        },
      },
      { key: `full/full/seed${seed}`, settings: { full: true, seed: String(seed) } },
    ]);
  const probe = probePath(model);
  const ranks = ranksFor(model, name === "delta" ? DELTA_RANKS : RANKS);
  return ranks.flatMap((r) =>
    seedList.map((seed) => ({
      key: `rank/r${r}/seed${seed}`,
      settings: {
        targets: `${ATTENTION.q},${ATTENTION.v}`,
        rank: String(r),
        alpha: String(2 * r),
        seed: String(seed),
      },
      probe,
      delta: true,
    })),
  );
}

export interface Row {
  label: string;
  rank: number;
  params: number;
  valLoss: { mean: number; spread: number; min: number; max: number };
  seeds: number;
}

/** One row per configuration: the mean held-out loss over its seeds and half their range. */
export function summarise(runs: readonly RunOutcome[]): Row[] {
  const groups = new Map<string, RunOutcome[]>();
  for (const r of runs) {
    const label = r.key.replace(/\/seed\d+$/, "");
    groups.set(label, [...(groups.get(label) ?? []), r]);
  }
  return [...groups].map(([label, rs]) => ({
    label,
    rank: Number(rs[0]!.settings.rank),
    params: rs[0]!.trainable,
    valLoss: meanSpread(rs.map((r) => r.valLoss)),
    seeds: rs.length,
  }));
}

/** φ between two runs' probed A matrices (rows: first's directions, columns: second's). */
export function similarity(a: RunOutcome, b: RunOutcome): { r1: number; r2: number; phi: Float64Array } {
  const pa = a.probeA!;
  const pb = b.probeA!;
  return {
    r1: pa.r,
    r2: pb.r,
    phi: subspaceSimilarity(Float64Array.from(pa.values), pa.r, Float64Array.from(pb.values), pb.r, pa.k),
  };
}
