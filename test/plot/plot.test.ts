/** Loss charts: metrics.jsonl parsing, the SVG holds exactly the series it claims, `lora plot`, and `lora train`'s loss.svg. */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { lossChartSvg } from "../../src/plot/loss-chart.js";
import { parseMetrics, type RunMetrics } from "../../src/plot/metrics.js";
import { binLoss, lossChartText } from "../../src/plot/text-chart.js";
import { assertOk, fixtureModel, lora, writeJsonl } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-plot-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** metrics.jsonl as lora train writes it: a train row per step, a validation row every `every` steps. */
function metricsText(steps: number, every: number, lossAt = (s: number) => 5 - Math.log(s)): string {
  const rows: unknown[] = [];
  for (let step = 1; step <= steps; step++) {
    rows.push({ step, loss: lossAt(step), lr: 1e-3, tokens: 64 * step, elapsed_s: step, grad_norm: 1 });
    if (step % every === 0)
      rows.push({ step, val_loss: lossAt(step) + 0.1, val_perplexity: 1, elapsed_s: step });
  }
  return `${rows.map((r) => JSON.stringify(r)).join("\n")}\n`;
}

/**
 * The data points of each series in an SVG drawn by Vega: for a line mark, the vertices of each
 * path (one path per run, its aria-label naming the run); for point marks, one path per point.
 */
function svgSeries(svg: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const [, cls, body] of svg.matchAll(
    /<g class="mark-(?:line|symbol) role-mark ([\w-]+)"[^>]*>(.*?)<\/g>/g,
  )) {
    for (const [, label, d] of body!.matchAll(/<path aria-label="([^"]*)"[^>]*? d="([^"]*)"/g)) {
      const run = /run: ([^;]+)/.exec(label!)?.[1];
      const key = `${cls} ${run}`;
      const vertices = cls!.includes("layer_1_layer_1") ? 1 : (d!.match(/[ML]/g) ?? []).length;
      counts.set(key, (counts.get(key) ?? 0) + vertices);
    }
  }
  return counts;
}

describe("metrics.jsonl", () => {
  it("splits train and validation rows, gives each evaluation its tokens, and skips torn lines", () => {
    const text = `${metricsText(6, 3)}{"step": 7, "loss": 1.2, "lr"`; // a run killed mid-line
    const m = parseMetrics(text, "r");
    assert.equal(m.train.length, 6);
    assert.deepEqual(
      m.val.map((v) => [v.step, v.tokens]),
      [
        [3, 192],
        [6, 384],
      ],
    );
    assert.equal(m.skipped, 1);
  });

  it("keeps the later row of a step written twice (a resumed run), and skips non-finite values", () => {
    const text = [
      { step: 1, loss: 3, lr: 1, tokens: 10 },
      { step: 2, loss: 9, lr: 1, tokens: 20 },
      { step: 2, loss: 2, lr: 1, tokens: 20 },
      { step: 3, loss: null, lr: 1, tokens: 30 },
    ]
      .map((r) => JSON.stringify(r))
      .join("\n");
    const m = parseMetrics(text, "r");
    assert.deepEqual(
      m.train.map((p) => p.loss),
      [3, 2],
    );
    assert.equal(m.skipped, 1);
  });
});

describe("the SVG chart", () => {
  it("draws every point of every series: train and validation loss by step and by tokens, and the lr", async () => {
    const a: RunMetrics = parseMetrics(metricsText(20, 5), "runA");
    const b: RunMetrics = parseMetrics(
      metricsText(12, 4, (s) => 4 - Math.log(s)),
      "runB",
    );
    const svg = await lossChartSvg([a, b]);
    const series = svgSeries(svg);
    for (const x of ["step", "tokens"]) {
      assert.equal(series.get(`train_loss_by_${x}_marks runA`), 20, x);
      assert.equal(series.get(`train_loss_by_${x}_marks runB`), 12, x);
      assert.equal(series.get(`val_loss_by_${x}_marks runA`), 4, x);
      assert.equal(series.get(`val_loss_by_${x}_marks runB`), 3, x);
    }
    assert.equal(series.get("lr_by_step_marks runA"), 20);
    // the legend names both runs
    assert.match(svg, />runA</);
    assert.match(svg, />runB</);
  });
});

describe("the terminal chart", () => {
  it("bins steps to the width, shares one step axis between runs, and summarises each run", () => {
    const long = parseMetrics(metricsText(100, 50), "long");
    const short = parseMetrics(metricsText(50, 50), "short");
    const [l, s] = binLoss([long, short], 20);
    assert.equal(l!.length, 20);
    assert.equal(s!.length, 10); // half the steps, half the columns
    // column 0 holds steps 1-5: their mean
    const mean = [1, 2, 3, 4, 5].reduce((t, x) => t + 5 - Math.log(x), 0) / 5;
    assert.ok(Math.abs(l![0]! - mean) < 1e-12);
    const text = lossChartText([long, short], { width: 60 });
    assert.match(
      text,
      /── long: step 100, train loss 0\.3948, lr 1\.00e-3, validation loss 0\.4948 at step 100/,
    );
    assert.match(text, /── short: step 50/);
    const chart = text.split("\n").filter((line) => /[┤┼]/.test(line));
    assert.ok(chart.length >= 12 && chart.every((line) => line.length <= 60), text);
  });
});

describe("lora plot", () => {
  const run = join(tmp, "run1");
  mkdirSync(run);
  writeFileSync(join(run, "metrics.jsonl"), metricsText(30, 10));

  it("prints a text chart without --out, writes SVG and PNG with it", () => {
    const text = lora("plot", run);
    assertOk(text);
    assert.match(text.out, /training loss, steps 1-30/);
    const svgOut = join(tmp, "c.svg");
    assertOk(lora("plot", run, join(run, "metrics.jsonl"), "--out", svgOut));
    assert.match(readFileSync(svgOut, "utf8"), /^<svg/);
    const pngOut = join(tmp, "c.png");
    assertOk(lora("plot", run, "--out", pngOut));
    assert.deepEqual(
      [...readFileSync(pngOut).subarray(0, 8)],
      [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a],
    );
  });

  it("refuses a folder without metrics, no folder at all, and an unknown image type, saying what to give", () => {
    const empty = join(tmp, "empty");
    mkdirSync(empty);
    assert.match(
      lora("plot", empty).err,
      /no metrics\.jsonl here; give the --out folder of a 'lora train' run/,
    );
    assert.match(lora("plot").err, /missing RUN_DIR/);
    assert.match(lora("plot", join(tmp, "nope")).err, /not found/);
    assert.match(lora("plot", run, "--out", join(tmp, "c.jpg")).err, /ending in \.svg or \.png/);
    const mine = join(tmp, "mine.svg");
    writeFileSync(mine, "a user's file");
    assert.match(lora("plot", run, "--out", mine).err, /already exists; pass --overwrite to replace it/);
    assert.equal(readFileSync(mine, "utf8"), "a user's file");
    assertOk(lora("plot", run, "--out", mine, "--overwrite"));
  });
});

describe("lora train writes loss.svg", () => {
  it("beside metrics.jsonl, with the run's points", async () => {
    const data = join(tmp, "ids.jsonl");
    writeJsonl(
      data,
      Array.from({ length: 8 }, (_, i) => ({
        input_ids: Array.from({ length: 12 }, (_, t) => (i + 3 * t) % 60),
      })),
    );
    const out = join(tmp, "trained");
    const r = lora(
      "train",
      "--model",
      fixtureModel("llama_gqa_tied"),
      "--data",
      data,
      "--out",
      out,
      "--steps",
      "4",
      "--save-every",
      "2",
      "--batch-size",
      "2",
    );
    assertOk(r);
    assert.ok(existsSync(join(out, "loss.svg")));
    assert.match(r.out, /loss\.svg/);
    const series = svgSeries(readFileSync(join(out, "loss.svg"), "utf8"));
    assert.equal(series.get("train_loss_by_step_marks trained"), 4);
  });
});
