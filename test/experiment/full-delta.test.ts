/** `lora experiment full` and `delta`: the plans, the reports' charts and tables, and tiny end-to-end runs. */
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { maxRank, planRuns } from "../../src/experiment/experiments.js";
import { deltaRows } from "../../src/experiment/report-delta.js";
import { fullRows } from "../../src/experiment/report-full.js";
import type { RunOutcome } from "../../src/experiment/runs.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { parseSafetensors } from "../../src/io/safetensors.js";
import { chartSvg } from "../../src/plot/render.js";
import { assertOk, fixtureModel, lora, writeJsonl } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-exp-fd-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const model = fixtureModel("llama_gqa_tied"); // hidden 32, k/v 16 wide (grouped-query)
const data = join(tmp, "data.jsonl");
writeJsonl(
  data,
  Array.from({ length: 40 }, (_, i) => ({
    input_ids: Array.from({ length: 16 }, (_, t) => (3 * i + 5 * t) % 60),
  })),
);
const out = join(tmp, "exp");
const args = (name: string) => [
  "experiment",
  name,
  "--model",
  model,
  "--data",
  data,
  "--out",
  out,
  "--steps",
  "2",
  "--seeds",
  "1",
  "--batch-size",
  "2",
];
const results = (name: string) =>
  JSON.parse(readFileSync(join(out, name, "results.json"), "utf8")) as { runs: Record<string, RunOutcome> };

describe("the plans of full, delta and rank", () => {
  it("cap the ranks at the narrowest q/v matrix, and pair LoRA with full fine-tuning per seed", () => {
    const { model: m } = loadModelFolder(model);
    assert.equal(maxRank(m, "q_proj,v_proj"), 16); // v_proj is [16, 32]
    const rank = planRuns("rank", m, 1).map((p) => Number(p.settings.rank));
    assert.deepEqual(rank, [1, 2, 4, 8, 16]); // 32 and 64 do not fit: 16 once
    assert.deepEqual(
      planRuns("delta", m, 1).map((p) => p.key),
      ["rank/r4/seed0", "rank/r16/seed0"], // the rank experiment's own runs, at the paper's r=4 and (capped) 64
    );
    const full = planRuns("full", m, 2);
    assert.deepEqual(
      full.map((p) => p.key),
      ["full/lora/seed0", "full/full/seed0", "full/lora/seed1", "full/full/seed1"],
    );
    assert.equal(full[1]!.settings.full, true);
  });
});

describe("lora experiment full and delta, end to end", () => {
  it("full --steps 2 --seeds 1: counts every weight for full, the saved files' bytes, and the peak memory", async () => {
    assertOk(lora(...args("full")));
    const runs = results("full").runs;
    const fullRun = runs["full/full/seed0"]!;
    const loraRun = runs["full/lora/seed0"]!;
    // full fine-tuning trains every parameter the saved model.safetensors holds (tied embeddings once)
    const st = parseSafetensors(readFileSync(join(model, "model.safetensors")), "fixture");
    const stored = [...st.tensors.values()].reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
    assert.equal(fullRun.trainable, stored);
    // LoRA q, v at r=8 on 2 layers: 8·(32+32) + 8·(32+16) per layer
    assert.equal(loraRun.trainable, 2 * (8 * 64 + 8 * 48));
    assert.equal(fullRun.optimizerBytes, 8 * fullRun.trainable);
    assert.ok(fullRun.outputBytes!["model.safetensors"]! > 4 * stored, "f32 weights plus the header");
    assert.ok(loraRun.outputBytes!["adapter_model.safetensors"]! > 4 * loraRun.trainable);
    for (const r of [fullRun, loraRun]) assert.ok(r.memory!.peakBytes >= r.memory!.startBytes);
    const report = readFileSync(join(out, "full", "report.md"), "utf8");
    assert.ok(
      report.includes(
        `| trainable parameters | ${(1792).toLocaleString("en-US")} | ${stored.toLocaleString("en-US")} |`,
      ),
    );
    const svg = await chartSvg(
      (await import("../../src/experiment/report-full.js")).fullSection(Object.values(runs), {
        command: "c",
        machine: "m",
        model: "m",
        data: "d",
        steps: 2,
        seeds: 1,
        baseDtype: "f32",
      }).charts[0]!.spec,
    );
    // a held-out loss per method, and per method each of 4 sizes (trainable, optimizer, saved, memory rise) that is > 0
    const sizes = [fullRun, loraRun].reduce(
      (n, r) => n + 3 + (r.memory!.peakBytes > r.memory!.startBytes ? 1 : 0),
      0,
    );
    assert.equal((svg.match(/aria-roledescription="point"/g) ?? []).length, 2 + sizes);
    assert.equal(fullRows(Object.values(runs)).length, 2);
    assert.ok(existsSync(join(out, "full", "full.png")));
  });

  it("delta --steps 2 --seeds 1 trains the rank runs it needs, and takes them from the rank experiment's results where they are", () => {
    assertOk(lora(...args("delta")));
    const runs = Object.values(results("delta").runs);
    const rows = deltaRows(runs);
    assert.equal(rows.length, 2 * 2); // r = 4 and 16, on each of the 2 layers' q_proj
    for (const r of rows) {
      assert.ok(r.projDelta.mean <= r.projW0 + 1e-9, "no r directions carry more of W0 than its own top r");
      assert.ok(Math.abs(r.amplification.mean - r.deltaNormF.mean / r.projDelta.mean) < 1e-12);
    }
    const report = readFileSync(join(out, "delta", "report.md"), "utf8");
    assert.match(report, /the chosen layer is model\.layers\.1\.self_attn\.q_proj/);
    assert.ok(existsSync(join(out, "delta", "delta.svg")));
    // delta finds its runs in rank/results.json (here: a rank folder holding exactly those runs) and trains nothing
    const out2 = join(tmp, "exp2");
    mkdirSync(join(out2, "rank"), { recursive: true });
    copyFileSync(join(out, "delta", "results.json"), join(out2, "rank", "results.json"));
    const again = lora(...args("delta").map((x) => (x === out ? out2 : x)));
    assertOk(again);
    assert.match(again.err, /delta: 2 of 2 runs already done .* or the rank experiment's/);
  });
});
