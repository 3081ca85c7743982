/**
 * The paper's experiments at small scale (Hu et al. 2021): what each trains, and what its report says.
 *
 *   targets  Table 5: a fixed parameter budget spread over {q}, {k}, {v}, {o}, {q,k}, {q,v}, {q,k,v,o}
 *   rank     Table 6 and Section 7.2: r from 1 to 64 on {q,v}; the subspace similarity of A_{r=8}
 *            and A_{r=64}, and of two seeds at r=64
 *
 * An experiment is a list of runs (each a key and its settings) and an analysis of their outcomes;
 * the shell runs what is not done yet and stores the results, so a rerun skips finished runs.
 */
import type { Adaptable } from "../lora/inject.js";
import { budgetConfigs } from "./budget.js";
import { meanSpread, type RunOutcome } from "./runs.js";
import { subspaceSimilarity } from "./subspace.js";

export const EXPERIMENTS = ["targets", "rank"] as const;
export type ExperimentName = (typeof EXPERIMENTS)[number];

export interface PlannedRun {
  key: string;
  settings: Record<string, string>;
  /** Where to keep the A matrix (rank experiment: one attention module). */
  probe?: string;
}

/** The paper's matrix names, as module names of the Llama-style families. */
const ATTENTION = { q: "q_proj", k: "k_proj", v: "v_proj", o: "o_proj" } as const;
const TARGET_SETS = ["q", "k", "v", "o", "q,k", "q,v", "q,k,v,o"];
export const RANKS = [1, 2, 4, 8, 16, 32, 64];

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
  const probe = probePath(model);
  return RANKS.flatMap((r) =>
    seedList.map((seed) => ({
      key: `rank/r${r}/seed${seed}`,
      settings: {
        targets: `${ATTENTION.q},${ATTENTION.v}`,
        rank: String(r),
        alpha: String(2 * r),
        seed: String(seed),
      },
      probe,
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
