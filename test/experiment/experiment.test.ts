/** The paper's experiments: subspace similarity on constructed matrices, the budget arithmetic, the charts, and a tiny end-to-end run. */
import assert from "node:assert/strict";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { budgetConfigs, costPerRank } from "../../src/experiment/budget.js";
import { planRuns } from "../../src/experiment/experiments.js";
import { experimentReport } from "../../src/experiment/report.js";
import type { RunOutcome } from "../../src/experiment/runs.js";
import { subspaceSimilarity, symmetricEigen } from "../../src/experiment/subspace.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { chartSvg } from "../../src/plot/render.js";
import { Rng } from "../../src/tensor/random.js";
import { assertOk, fixtureModel, lora, writeJsonl } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-exp-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** r rows of length k spanning the given unit directions e_d, each row a random mix of them. */
function spanning(dirs: number[], r: number, k: number, rng: Rng): Float64Array {
  const a = new Float64Array(r * k);
  for (let i = 0; i < r; i++) for (const d of dirs) a[i * k + d] = rng.normal();
  return a;
}

describe("subspace similarity φ", () => {
  const rng = new Rng(3);
  it("is 1 for the same subspace, 0 for orthogonal ones, and min(i,j)-normalised in between", () => {
    const k = 12;
    const a = spanning([0, 1, 2], 3, k, rng);
    const b = spanning([0, 1, 2], 3, k, rng); // another basis of the same 3-dimensional subspace
    const c = spanning([5, 6, 7], 3, k, rng);
    const same = subspaceSimilarity(a, 3, b, 3, k);
    assert.ok(Math.abs(same[2 * 3 + 2]! - 1) < 1e-9, `φ(3,3) = ${same[8]}`);
    const orth = subspaceSimilarity(a, 3, c, 3, k);
    for (const x of orth) assert.ok(Math.abs(x) < 1e-12);
    // A's 3 directions inside a 6-dimensional B: φ(3, 6) = 3/3 = 1
    const big = spanning([0, 1, 2, 8, 9, 10], 6, k, rng);
    assert.ok(Math.abs(subspaceSimilarity(a, 3, big, 6, k)[2 * 6 + 5]! - 1) < 1e-9);
  });

  it("finds eigenvalues and orthonormal eigenvectors of a symmetric matrix", () => {
    const m = Float64Array.from([4, 1, 2, 1, 3, 0, 2, 0, 5]);
    const { values, vectors } = symmetricEigen(m, 3);
    for (let j = 0; j < 3; j++)
      for (let i = 0; i < 3; i++) {
        let mv = 0;
        for (let t = 0; t < 3; t++) mv += m[i * 3 + t]! * vectors[t * 3 + j]!;
        assert.ok(Math.abs(mv - values[j]! * vectors[i * 3 + j]!) < 1e-10);
      }
    assert.ok(values[0]! >= values[1]! && values[1]! >= values[2]!);
  });
});

describe("the fixed budget of `targets`", () => {
  it("spends the budget exactly where the matrices have the same size, and says how far off it is where not", () => {
    const { model } = loadModelFolder(fixtureModel("llama_gqa_tied")); // grouped-query: k, v narrower than q
    const q = costPerRank(model, ["q_proj"]);
    const kv = costPerRank(model, ["k_proj"]);
    assert.ok(kv < q);
    const { budget, configs } = budgetConfigs(
      model,
      [
        { name: "q,o", targets: ["q_proj", "o_proj"] },
        { name: "k", targets: ["k_proj"] },
      ],
      { targets: ["q_proj"], rank: 8 },
    );
    assert.equal(budget, 8 * q);
    const [qo, k] = configs;
    assert.equal(qo!.rank, 4); // q and o have the same shape: exactly half the rank each
    assert.equal(qo!.params, budget);
    assert.equal(qo!.offBy, 0);
    assert.equal(k!.rank, Math.round(budget / kv));
    assert.ok(Math.abs(k!.params - budget) <= kv / 2, "within half a rank step");
    assert.equal(k!.offBy, (k!.params - budget) / budget);
    const runs = planRuns("targets", model, 2);
    assert.equal(runs.length, 14);
    assert.ok(runs.every((r) => Number(r.settings.alpha) === 2 * Number(r.settings.rank)));
  });
});

describe("experiment reports", () => {
  it("draw every configuration: one point per target set, one cell per (i, j) of the heat map", async () => {
    const outcome = (
      key: string,
      rank: number,
      valLoss: number,
      probe?: RunOutcome["probeA"],
    ): RunOutcome => ({
      key,
      settings: { rank: String(rank) },
      valLoss,
      valCurve: [],
      trainable: 100,
      stepS: 1,
      tokensPerS: 1,
      optimizerBytes: 800,
      probeA: probe,
    });
    const runs = ["q", "k", "v", "o", "q,k", "q,v", "q,k,v,o"].map((n, i) =>
      outcome(`targets/${n}/r8/seed0`, 8, 5 - i / 10),
    );
    const ctx = { command: "c", machine: "m", model: "m", data: "d", steps: 1, seeds: 1, baseDtype: "f32" };
    const rep = experimentReport("targets", runs, ctx);
    const svg = await chartSvg(rep.charts[0]!.spec);
    assert.equal((svg.match(/aria-roledescription="point"/g) ?? []).length, 7);
    assert.match(rep.markdown, /\*\*Did the claim hold here\?\*\* Yes: the best configuration is q,k,v,o/);

    const rng = new Rng(1);
    const probe = (r: number) => ({
      path: "model.layers.0.self_attn.q_proj",
      r,
      k: 16,
      values: Array.from({ length: r * 16 }, () => rng.normal()),
    });
    const rankRuns = [8, 64].flatMap((r) =>
      [0, 1].map((s) => outcome(`rank/r${r}/seed${s}`, r, 4, probe(r))),
    );
    const rank = experimentReport("rank", rankRuns, { ...ctx, seeds: 2 });
    const heat = rank.charts.find((c) => c.name === "subspace-r8-r64")!;
    const heatSvg = await chartSvg(heat.spec);
    assert.equal((heatSvg.match(/aria-roledescription="rect mark"/g) ?? []).length, 8 * 64);
  });

  it("lora experiment targets --steps 2 --seeds 1 runs end to end, writes the report, and skips finished runs", () => {
    const data = join(tmp, "data.jsonl");
    writeJsonl(
      data,
      Array.from({ length: 40 }, (_, i) => ({
        input_ids: Array.from({ length: 16 }, (_, t) => (3 * i + 5 * t) % 60),
      })),
    );
    const out = join(tmp, "exp");
    const args = [
      "experiment",
      "targets",
      "--model",
      fixtureModel("llama_gqa_tied"),
      "--data",
      data,
      "--out",
      out,
    ];
    const r = lora(...args, "--steps", "2", "--seeds", "1", "--batch-size", "2");
    assertOk(r);
    for (const f of ["report.md", "results.json", "targets.svg", "targets.png"])
      assert.ok(existsSync(join(out, "targets", f)), f);
    const report = readFileSync(join(out, "targets", "report.md"), "utf8");
    assert.match(report, /\| targets\/q,v\/r\d+ \|/);
    assert.match(report, /Not exact for/); // grouped-query attention: k and v cannot spend the budget exactly
    const again = lora(...args, "--steps", "2", "--seeds", "1", "--batch-size", "2");
    assertOk(again);
    assert.match(again.err, /7 of 7 runs already done/);
    assert.match(lora(...args.slice(0, 1), "nope").err, /unknown experiment "nope"/);
    // a folder of the same name that this command did not make is refused, its files untouched
    const theirs = join(tmp, "theirs");
    mkdirSync(join(theirs, "targets"), { recursive: true });
    writeFileSync(join(theirs, "targets", "report.md"), "my notes\n");
    const refused = lora(...args.slice(0, -1), theirs, "--steps", "2", "--seeds", "1", "--batch-size", "2");
    assert.equal(refused.code, 2, refused.err);
    assert.match(refused.err, /theirs\/targets holds files that lora experiment targets did not write/);
    assert.equal(readFileSync(join(theirs, "targets", "report.md"), "utf8"), "my notes\n");
    assert.deepEqual(readdirSync(join(theirs, "targets")), ["report.md"]);
  });
});
