/**
 * What an experiment writes: its charts (Vega-Lite specs, rendered to SVG by the caller) and report.md
 * (what was run, a table of every number, the charts, and whether the paper's claim held here).
 */
import type { TopLevelSpec } from "vega-lite";
import { type ExperimentName, type Row, similarity, summarise } from "./experiments.js";
import { CONFIG, f4, fmt, SCHEMA } from "./format.js";
import { deltaSection } from "./report-delta.js";
import { fullSection } from "./report-full.js";
import type { RunOutcome } from "./runs.js";

export interface ReportContext {
  command: string;
  machine: string;
  model: string;
  data: string;
  steps: number;
  seeds: number;
  baseDtype: string;
}

export interface Chart {
  /** File name without extension (the caller writes .svg and .png). */
  name: string;
  title: string;
  spec: TopLevelSpec;
}

function lossBars(rows: Row[], title: string): TopLevelSpec {
  const values = rows.map((r) => ({ config: `${r.label.split("/")[1]} (r${r.rank})`, ...r.valLoss }));
  return {
    $schema: SCHEMA,
    title,
    width: 420,
    height: 240,
    data: { values },
    encoding: { x: { field: "config", type: "nominal", sort: null, title: "adapted matrices (rank)" } },
    layer: [
      {
        mark: { type: "point", filled: true, size: 60 },
        encoding: {
          y: { field: "mean", type: "quantitative", scale: { zero: false }, title: "held-out loss" },
        },
      },
      {
        mark: { type: "rule" },
        encoding: { y: { field: "min", type: "quantitative" }, y2: { field: "max" } },
      },
    ],
    config: CONFIG,
  } as TopLevelSpec;
}

function rankLine(rows: Row[]): TopLevelSpec {
  return {
    $schema: SCHEMA,
    title: "held-out loss against rank r (q, v)",
    width: 420,
    height: 240,
    data: { values: rows.map((r) => ({ rank: r.rank, ...r.valLoss })) },
    encoding: { x: { field: "rank", type: "quantitative", scale: { type: "log", base: 2 }, title: "r" } },
    layer: [
      {
        mark: { type: "area", opacity: 0.2 },
        encoding: { y: { field: "min", type: "quantitative" }, y2: { field: "max" } },
      },
      {
        mark: { type: "line", point: true },
        encoding: {
          y: { field: "mean", type: "quantitative", scale: { zero: false }, title: "held-out loss" },
        },
      },
    ],
    config: CONFIG,
  } as TopLevelSpec;
}

function heatmap(
  phi: Float64Array,
  r1: number,
  r2: number,
  title: string,
  ylabel: string,
  xlabel: string,
): TopLevelSpec {
  const values: { i: number; j: number; phi: number }[] = [];
  for (let i = 0; i < r1; i++)
    for (let j = 0; j < r2; j++) values.push({ i: i + 1, j: j + 1, phi: phi[i * r2 + j]! });
  return {
    $schema: SCHEMA,
    title,
    width: Math.min(640, 10 * r2),
    height: Math.max(80, 10 * r1),
    data: { values },
    mark: "rect",
    encoding: {
      x: {
        field: "j",
        type: "ordinal",
        title: xlabel,
        axis: { labelExpr: "datum.value % 8 === 0 || datum.value === 1 ? datum.label : ''" },
      },
      y: { field: "i", type: "ordinal", title: ylabel },
      color: { field: "phi", type: "quantitative", scale: { domain: [0, 1], scheme: "viridis" }, title: "φ" },
    },
    config: CONFIG,
  } as TopLevelSpec;
}

function table(rows: Row[]): string {
  const lines = [
    "| configuration | rank | trainable parameters | held-out loss (mean ± half range) | seeds |",
    "|---|---|---|---|---|",
  ];
  for (const r of rows)
    lines.push(
      `| ${r.label} | ${r.rank} | ${fmt(r.params)} | ${f4(r.valLoss.mean)} ± ${f4(r.valLoss.spread)} | ${r.seeds} |`,
    );
  return lines.join("\n");
}

/** The report of one experiment and its charts, from its run outcomes. */
export function experimentReport(
  name: ExperimentName,
  runs: readonly RunOutcome[],
  ctx: ReportContext,
): { markdown: string; charts: Chart[]; results: Record<string, unknown> } {
  const rows = summarise(runs);
  const head = [
    `# Experiment \`${name}\``,
    "",
    `Command: \`${ctx.command}\``,
    "",
    `Machine: ${ctx.machine}. Model: \`${ctx.model}\` (base weights ${ctx.baseDtype}). Data: \`${ctx.data}\`. ${ctx.steps} steps per run, seeds 0-${ctx.seeds - 1}; AdamW, the held-out loss on the validation rows at the end of each run. Every number below comes from the runs of this command (results.json holds them all).`,
    "",
  ];
  const charts: Chart[] = [];
  const body: string[] = [];
  const results: Record<string, unknown> = { rows };
  if (name === "full" || name === "delta") {
    const section = (name === "full" ? fullSection : deltaSection)(runs, ctx);
    return {
      markdown: [...head, ...section.body, ""].join("\n"),
      charts: section.charts,
      results: section.results,
    };
  }
  if (name === "targets") {
    charts.push({
      name: "targets",
      title: "held-out loss by adapted matrices",
      spec: lossBars(rows, "held-out loss under one parameter budget"),
    });
    const budget = rows.find((r) => r.label.startsWith("targets/q/"))!.params;
    const offs = rows.filter((r) => r.params !== budget);
    const best = [...rows].sort((a, b) => a.valLoss.mean - b.valLoss.mean)[0]!;
    const single = rows.filter((r) => !r.label.split("/")[1]!.includes(","));
    const bestSingle = [...single].sort((a, b) => a.valLoss.mean - b.valLoss.mean)[0]!;
    const multi = best.label.split("/")[1]!.includes(",");
    const bestMulti = [...rows]
      .filter((r) => r.label.split("/")[1]!.includes(","))
      .sort((a, b) => a.valLoss.mean - b.valLoss.mean)[0]!;
    const gap = bestSingle.valLoss.mean - best.valLoss.mean;
    const noise = Math.max(best.valLoss.spread, bestSingle.valLoss.spread);
    body.push(
      "The paper (Table 5) holds the number of trainable parameters fixed and finds that adapting W_q and W_v together (or all four) beats putting the whole budget into one matrix type.",
      "",
      `Budget: ${fmt(budget)} parameters (q_proj at rank 8). ${offs.length === 0 ? "Every configuration spends it exactly." : `Not exact for ${offs.map((r) => `${r.label.split("/")[1]} (${fmt(r.params)}, ${(((r.params - budget) / budget) * 100).toFixed(1)}%)`).join(", ")}: no integer rank spends the budget there (the matrices differ in size), so the closest rank is used.`}`,
      "",
      table(rows),
      "",
      "![targets](targets.svg)",
      "",
      `**Did the claim hold here?** ${multi ? `Yes: the best configuration is ${best.label.split("/")[1]} (${f4(best.valLoss.mean)}), ${gap > noise ? "ahead of the best single matrix type" : "but within the seeds' spread of the best single type"} ${bestSingle.label.split("/")[1]} (${f4(bestSingle.valLoss.mean)}; a gap of ${f4(gap)} against a spread of ${f4(noise)}).` : `No: a single matrix type, ${best.label.split("/")[1]} (${f4(best.valLoss.mean)}), is best here, ${f4(bestMulti.valLoss.mean - best.valLoss.mean)} ahead of the best configuration that spreads the budget, ${bestMulti.label.split("/")[1]} (${f4(bestMulti.valLoss.mean)}; the seeds' spread is ${f4(Math.max(best.valLoss.spread, bestMulti.valLoss.spread))}).`} The setting differs from the paper's: a model of a few million parameters or less instead of GPT-3's 175B, ${ctx.steps} steps, and a small dataset, so the differences are small next to the paper's.`,
    );
  } else {
    charts.push({ name: "rank", title: "held-out loss against rank", spec: rankLine(rows) });
    body.push(
      "The paper (Table 6) finds that a very small rank is often enough, and (Section 7.2) that the top directions learned at r=8 and r=64 overlap strongly, while two r=64 runs from different seeds share only a few.",
      "",
      table(rows),
      "",
      "![rank](rank.svg)",
      "",
    );
    const find = (r: number, seed: number) => runs.find((x) => x.key === `rank/r${r}/seed${seed}`);
    // the paper's r=64, or the largest rank that fits a narrower model (ranksFor)
    const big = Math.max(...rows.map((r) => r.rank));
    const r8 = find(8, 0);
    const r64 = find(big, 0);
    const r64b = find(big, 1);
    const best = [...rows].sort((a, b) => a.valLoss.mean - b.valLoss.mean)[0]!;
    const small = rows.filter((r) => r.rank <= 4);
    const bestSmall = [...small].sort((a, b) => a.valLoss.mean - b.valLoss.mean)[0];
    if (bestSmall)
      body.push(
        `**Small r.** The best rank is ${best.rank} (${f4(best.valLoss.mean)}); the best of r ≤ 4 is r=${bestSmall.rank} (${f4(bestSmall.valLoss.mean)}), ${Math.abs(bestSmall.valLoss.mean - best.valLoss.mean) <= Math.max(best.valLoss.spread, bestSmall.valLoss.spread) ? "within the seeds' spread of it: the claim holds here" : `${f4(bestSmall.valLoss.mean - best.valLoss.mean)} behind it: a small rank is not enough here`}.`,
        "",
      );
    if (r8?.probeA && r64?.probeA) {
      const s = similarity(r8, r64);
      charts.push({
        name: `subspace-r8-r${big}`,
        title: `φ(A_r=8, A_r=${big})`,
        spec: heatmap(
          s.phi,
          s.r1,
          s.r2,
          `subspace similarity, ${r8.probeA.path}: r=8 vs r=${big}`,
          "i (r=8)",
          `j (r=${big})`,
        ),
      });
      const top = s.phi[0]!;
      results.phi_r8_rbig = { rbig: big, i1j1: top, path: r8.probeA.path };
      let cross = `φ(1, 1) between A_{r=8} and A_{r=${big}} is ${f4(top)}`;
      if (r64b?.probeA) {
        const t = similarity(r64, r64b);
        charts.push({
          name: "subspace-seeds",
          title: `φ(A_r=${big} seed 0, A_r=${big} seed 1)`,
          spec: heatmap(
            t.phi.slice(0, 8 * t.r2),
            8,
            t.r2,
            `subspace similarity: two seeds at r=${big} (first 8 rows)`,
            "i (seed 0)",
            "j (seed 1)",
          ),
        });
        results.phi_seeds = { i1j1: t.phi[0]! };
        cross += `; between two seeds at r=${big} it is ${f4(t.phi[0]!)}`;
        body.push(
          `**Subspaces** (${r8.probeA.path}, right-singular directions of A). ${cross}. The paper's pattern is a high first number and a low second one: ${top > t.phi[0]! ? "it holds here" : "it does not hold here"}. For scale: two random subspaces of dimensions i and j in ${r8.probeA.k} dimensions give φ(i, j) ≈ max(i, j)/${r8.probeA.k} on average (${f4(1 / r8.probeA.k)} at (1, 1)): numbers near that mean the two sets of directions are no more aligned than chance (A starts random, and ${ctx.steps} steps may not move it far from its start).`,
          "",
          `![r8 vs r${big}](subspace-r8-r${big}.svg)`,
          "",
          "![seeds](subspace-seeds.svg)",
        );
      } else
        body.push(
          `**Subspaces.** ${cross}. (Two seeds are needed for the seed comparison: pass --seeds 2 or more.)`,
          "",
          `![r8 vs r${big}](subspace-r8-r${big}.svg)`,
        );
    }
    body.push(
      "",
      `The setting differs from the paper's: a small model, ${ctx.steps} steps and a small dataset.`,
    );
  }
  return { markdown: [...head, ...body, ""].join("\n"), charts, results };
}
