/**
 * Combining LoRA adapters into one, PEFT's add_weighted_adapter, as pure functions over each adapter's
 * per-module weights (A [r, in], B [out, r], scale s = lora_alpha/r or /√r). Every result has scale 1:
 * the inputs' scales and weights are folded into the new factors, so it is written with
 * lora_alpha = r and no rsLoRA, and its update is exactly new_B·new_A.
 *
 *   cat:   A' = [A_1; A_2; …], B' = [w_1·s_1·B_1, w_2·s_2·B_2, …]: rank Σr_i, and B'·A' = Σ w_i·s_i·B_i·A_i
 *          exactly (whatever each input's rsLoRA or rank/alpha pattern: the scale is per module).
 *   svd:   the best rank-k approximation (Eckart–Young) of Σ w_i·s_i·B_i·A_i: the sum is B_c·A_c with
 *          B_c = [w_i·s_i·B_i], A_c = [A_i], so its SVD comes from QR of B_c and A_cᵀ and the SVD of the
 *          small core (lowrank.ts), without forming the out×in matrix.
 *   linear, ties, dare_linear, dare_ties, magnitude_prune: PEFT's formulas, applied to the A's and the
 *          B's separately (the factor space), each adapter's w·s split as √|w·s| on B and ±√|w·s| on A
 *          (the sign on A only). The result's update is (Σ b_i)(Σ a_i), which has cross terms
 *          b_i·a_j (i ≠ j): it is not the weighted sum of the updates (PEFT calls `linear` "a very
 *          rough approximation"). Exact for one adapter. Ranks must be equal (per module, as PEFT).
 *          ties / dare_ties: the sign of each entry is elected over the pruned, unweighted tensors
 *          (`total`: the sign of their sum; `frequency`: of their count of signs), and the weighted
 *          entries that agree are averaged (disjoint merge). magnitude_prune / ties keep each tensor's
 *          ⌊density·n⌋ largest |values|; dare_* keep each value with probability density (a seeded Rng)
 *          and divide by density. A density of 1 prunes nothing.
 * A module only some adapters target is combined from those (cat pads the others' rows with zeros),
 * as PEFT does.
 */
import { Rng } from "../tensor/random.js";
import { productSvd } from "./lowrank.js";
import type { ReportModule } from "./report.js";

export const COMBINE_METHODS = [
  "cat",
  "linear",
  "svd",
  "ties",
  "dare_linear",
  "dare_ties",
  "magnitude_prune",
] as const;
export type CombineMethod = (typeof COMBINE_METHODS)[number];
/** The methods that prune with a density. */
export const DENSITY_METHODS: readonly CombineMethod[] = [
  "ties",
  "dare_linear",
  "dare_ties",
  "magnitude_prune",
];
/** The methods that elect a sign per entry. */
export const SIGN_METHODS: readonly CombineMethod[] = ["ties", "dare_ties"];
/** The methods that combine A's and B's separately, which needs equal ranks. */
export const FACTOR_METHODS: readonly CombineMethod[] = ["linear", ...DENSITY_METHODS];

export type MajoritySignMethod = "total" | "frequency";

/** One adapter to combine: its name (for messages), its weight and its modules. */
export interface AdapterToCombine {
  name: string;
  weight: number;
  modules: readonly ReportModule[];
}

export interface CombineOptions {
  method: CombineMethod;
  /** svd: the new rank (default: the largest input rank, as PEFT). */
  rank?: number;
  /** ties, dare_*, magnitude_prune: the fraction of values kept, in (0, 1]. */
  density?: number;
  /** ties, dare_ties (default total, as PEFT). */
  majoritySignMethod?: MajoritySignMethod;
  /** dare_*: the seed of the Rng that draws the masks (default 0). */
  seed?: number;
}

/** One module of the combined adapter: scale 1, so its update is B·A. */
export interface CombinedModule {
  path: string;
  r: number;
  in: number;
  out: number;
  A: Float32Array; // [r, in]
  B: Float32Array; // [out, r]
}

/** The problems with the adapters and options, each naming the adapter and the value (none: []). */
export function combineProblems(adapters: readonly AdapterToCombine[], o: CombineOptions): string[] {
  const p: string[] = [];
  if (!COMBINE_METHODS.includes(o.method))
    p.push(`method "${o.method}" is not one of ${COMBINE_METHODS.join(", ")}`);
  if (adapters.length === 0) p.push("no adapters to combine");
  for (const a of adapters)
    if (!(typeof a.weight === "number" && Number.isFinite(a.weight)))
      p.push(`adapter "${a.name}": weight ${a.weight} is not a finite number`);
  const needsDensity = DENSITY_METHODS.includes(o.method);
  if (needsDensity && o.density === undefined) p.push(`method ${o.method} needs a density in (0, 1]`);
  if (o.density !== undefined && !(o.density > 0 && o.density <= 1))
    p.push(`density ${o.density} is outside (0, 1]: it is the fraction of values kept`);
  if (o.density !== undefined && !needsDensity)
    p.push(`density is used by ${DENSITY_METHODS.join(", ")} only, not by ${o.method}`);
  if (o.majoritySignMethod !== undefined && !["total", "frequency"].includes(o.majoritySignMethod))
    p.push(`majority sign method "${o.majoritySignMethod}" is not total or frequency`);
  if (o.rank !== undefined && o.method !== "svd") p.push(`rank is used by svd only, not by ${o.method}`);
  if (o.rank !== undefined && !(Number.isSafeInteger(o.rank) && o.rank > 0))
    p.push(`rank ${o.rank} is not a positive integer`);
  // every adapter's modules: the same shape where two adapt the same module; equal ranks where needed
  const seen = new Map<string, { name: string; m: ReportModule }>();
  for (const a of adapters)
    for (const m of a.modules) {
      const first = seen.get(m.path);
      if (!first) {
        seen.set(m.path, { name: a.name, m });
        continue;
      }
      if (first.m.in !== m.in || first.m.out !== m.out)
        p.push(
          `"${m.path}" is [${first.m.out}, ${first.m.in}] in adapter "${first.name}" but [${m.out}, ${m.in}] in adapter "${a.name}": the adapters are for different base models`,
        );
      else if (FACTOR_METHODS.includes(o.method) && first.m.r !== m.r)
        p.push(
          `${o.method} needs equal ranks: "${m.path}" has r ${first.m.r} in adapter "${first.name}" and r ${m.r} in adapter "${a.name}" (use cat or svd for adapters of different ranks)`,
        );
    }
  if (o.method === "cat" && p.length === 0) {
    const rank = combinedRank(adapters, o);
    const narrow = [...seen.values()].find(({ m }) => rank > Math.min(m.in, m.out));
    if (narrow)
      p.push(
        `cat gives rank ${rank}, above min(out, in) = ${Math.min(narrow.m.in, narrow.m.out)} of "${narrow.m.path}", and a LoRA's rank cannot exceed its layer's: use svd (--rank ${Math.min(narrow.m.in, narrow.m.out)} or less) for these adapters, or merge them into the model (lora merge --model)`,
      );
  }
  if (o.method === "svd" && o.rank !== undefined)
    for (const { m } of seen.values())
      if (o.rank > Math.min(m.in, m.out))
        p.push(`rank ${o.rank} is above min(out, in) = ${Math.min(m.in, m.out)} of "${m.path}"`);
  return p;
}

/** The combined adapter's rank, as PEFT sets it: Σr for cat, --rank or the largest r for svd, else the common r. */
export function combinedRank(adapters: readonly AdapterToCombine[], o: CombineOptions): number {
  const ranks = adapters.map((a) => Math.max(0, ...a.modules.map((m) => m.r)));
  if (o.method === "cat") return ranks.reduce((x, y) => x + y, 0);
  if (o.method === "svd") return o.rank ?? Math.max(...ranks);
  return Math.max(...ranks);
}

/** Combines the adapters' modules (the union of their paths, in first-seen order); throws listing every problem. */
export function combineModules(adapters: readonly AdapterToCombine[], o: CombineOptions): CombinedModule[] {
  const problems = combineProblems(adapters, o);
  if (problems.length > 0)
    throw new Error(
      `cannot combine the adapters (${problems.length} problem${problems.length > 1 ? "s" : ""}):\n${problems.map((x) => `  - ${x}`).join("\n")}`,
    );
  const rank = combinedRank(adapters, o);
  const byPath = new Map<string, Array<{ w: number; m: ReportModule }>>();
  for (const a of adapters)
    for (const m of a.modules) {
      const list = byPath.get(m.path) ?? [];
      list.push({ w: a.weight * m.scale, m });
      byPath.set(m.path, list);
    }
  const rng = new Rng(o.seed ?? 0);
  return [...byPath.entries()].map(([path, parts]) => {
    const { in: inF, out } = parts[0]!.m;
    if (o.method === "cat") return { path, ...cat(parts, rank, inF, out) };
    if (o.method === "svd") return { path, ...bestRank(parts, rank, inF, out) };
    return { path, ...factorMerge(parts, o, rng, inF, out) };
  });
}

type Part = { w: number; m: ReportModule };

function cat(parts: Part[], rank: number, inF: number, out: number): Omit<CombinedModule, "path"> {
  const A = new Float32Array(rank * inF);
  const B = new Float32Array(out * rank);
  let at = 0; // the next free rank slot
  for (const { w, m } of parts) {
    A.set(m.A, at * inF);
    for (let o = 0; o < out; o++) for (let k = 0; k < m.r; k++) B[o * rank + at + k] = w * m.B[o * m.r + k]!;
    at += m.r;
  }
  return { r: rank, in: inF, out, A, B };
}

/** The best rank-k approximation of Σ w_i·B_i·A_i, as B' = U_k·S_k and A' = V_kᵀ. */
function bestRank(parts: Part[], rank: number, inF: number, out: number): Omit<CombinedModule, "path"> {
  const R = parts.reduce((s, p) => s + p.m.r, 0);
  // the sum as L·M, L [out, n], M [n, in], with n <= min(out, in) so that both QRs are thin
  let n = R;
  let L = new Float64Array(out * R);
  let M = new Float64Array(R * inF);
  let at = 0;
  for (const { w, m } of parts) {
    for (let o = 0; o < out; o++) for (let k = 0; k < m.r; k++) L[o * R + at + k] = w * m.B[o * m.r + k]!;
    for (let k = 0; k < m.r; k++) for (let i = 0; i < inF; i++) M[(at + k) * inF + i] = m.A[k * inF + i]!;
    at += m.r;
  }
  if (R > Math.min(out, inF)) {
    const D = new Float64Array(out * inF); // the sum itself: its rank is at most min(out, in)
    for (let o = 0; o < out; o++)
      for (let k = 0; k < R; k++) {
        const l = L[o * R + k]!;
        if (l !== 0) for (let i = 0; i < inF; i++) D[o * inF + i]! += l * M[k * inF + i]!;
      }
    n = Math.min(out, inF);
    const eye = (d: number) => {
      const e = new Float64Array(d * d);
      for (let i = 0; i < d; i++) e[i * d + i] = 1;
      return e;
    };
    [L, M] = out <= inF ? [eye(out), D] : [D, eye(inF)];
  }
  const { u, s, v, k } = productSvd(L, M, out, n, inF);
  const keep = Math.min(rank, k);
  const A = new Float32Array(rank * inF);
  const B = new Float32Array(out * rank);
  for (let j = 0; j < keep; j++) {
    for (let o = 0; o < out; o++) B[o * rank + j] = u[o * k + j]! * s[j]!;
    for (let i = 0; i < inF; i++) A[j * inF + i] = v[i * k + j]!;
  }
  return { r: rank, in: inF, out, A, B };
}

function factorMerge(
  parts: Part[],
  o: CombineOptions,
  rng: Rng,
  inF: number,
  out: number,
): Omit<CombinedModule, "path"> {
  const r = parts[0]!.m.r;
  const wA = parts.map(({ w }) => Math.sign(w || 1) * Math.sqrt(Math.abs(w))); // PEFT: the sign on A only
  const wB = parts.map(({ w }) => Math.sqrt(Math.abs(w)));
  const A = mergeTensors(
    parts.map((p) => p.m.A),
    wA,
    o,
    rng,
  );
  const B = mergeTensors(
    parts.map((p) => p.m.B),
    wB,
    o,
    rng,
  );
  return { r, in: inF, out, A, B };
}

/** One of PEFT's merge_utils functions over equally long tensors, by method. */
export function mergeTensors(
  tensors: readonly Float32Array[],
  weights: readonly number[],
  o: CombineOptions,
  rng: Rng,
): Float32Array {
  const density = o.density ?? 1;
  let ts: Float32Array[] = [...tensors];
  if (o.method === "ties" || o.method === "magnitude_prune") ts = ts.map((t) => magnitudePrune(t, density));
  if (o.method === "dare_linear" || o.method === "dare_ties")
    ts = ts.map((t) => randomPrune(t, density, rng));
  const n = ts[0]!.length;
  const out = new Float32Array(n);
  if (o.method === "ties" || o.method === "dare_ties") {
    const total = (o.majoritySignMethod ?? "total") === "total";
    for (let i = 0; i < n; i++) {
      let vote = 0;
      for (const t of ts) vote += total ? t[i]! : Math.sign(t[i]!);
      const majority = vote >= 0 ? 1 : -1;
      let sum = 0;
      let count = 0;
      ts.forEach((t, k) => {
        if (Math.sign(t[i]!) === majority) {
          sum += weights[k]! * t[i]!;
          count++;
        }
      });
      out[i] = sum / Math.max(count, 1);
    }
    return out;
  }
  for (let i = 0; i < n; i++) {
    let sum = 0;
    ts.forEach((t, k) => {
      sum += weights[k]! * t[i]!;
    });
    out[i] = sum;
  }
  return out;
}

/** Keeps the ⌊density·n⌋ values of largest magnitude (ties: the earlier index), zeroes the rest. */
export function magnitudePrune(t: Float32Array, density: number): Float32Array {
  if (density >= 1) return t;
  const k = Math.floor(density * t.length);
  const order = [...t.keys()].sort((i, j) => Math.abs(t[j]!) - Math.abs(t[i]!) || i - j);
  const out = new Float32Array(t.length);
  for (const i of order.slice(0, k)) out[i] = t[i]!;
  return out;
}

/** DARE's drop and rescale: each value kept with probability density (rng.uniform() < density), then / density. */
export function randomPrune(t: Float32Array, density: number, rng: Rng): Float32Array {
  if (density >= 1) return t;
  const out = new Float32Array(t.length);
  for (let i = 0; i < t.length; i++) if (rng.uniform() < density) out[i] = t[i]! / density;
  return out;
}
