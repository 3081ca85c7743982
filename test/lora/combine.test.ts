/**
 * Combining adapters (lora/combine.ts through io/peft-combine.ts) against PEFT 0.21's own
 * add_weighted_adapter on the same adapters (test/fixtures/combine, scripts/make_combine_fixtures.py),
 * and the properties each method must have: cat equals applying both (with rsLoRA too, where PEFT's
 * does not), svd at rank >= the sum's rank is exact, linear of one adapter is exact, DARE keeps about
 * a density's fraction rescaled by 1/density and is reproducible by seed; and the bad inputs.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { readAdapter } from "../../src/io/node/adapter-folder.js";
import { adapterModules } from "../../src/io/peft.js";
import { combinePeftAdapters, type PeftToCombine } from "../../src/io/peft-combine.js";
import {
  type AdapterToCombine,
  type CombineOptions,
  combineModules,
  magnitudePrune,
  mergeTensors,
  randomPrune,
} from "../../src/lora/combine.js";
import type { ReportModule } from "../../src/lora/report.js";
import { Rng } from "../../src/tensor/random.js";
import { assertClose, fixturesDir } from "../helpers.js";

const dir = join(fixturesDir, "combine");

function adapter(name: string, weight = 1): PeftToCombine {
  const r = readAdapter(join(dir, name));
  return { name, weight, config: r.config, tensors: r.tensors, source: r.weights, baseModel: r.baseModel };
}

/** Each module's ΔW = scale·B·A, dense, in f64. */
function deltas(
  modules: readonly Pick<ReportModule, "path" | "r" | "in" | "out" | "A" | "B">[],
  scale = (_: string) => 1,
) {
  const out = new Map<string, Float64Array>();
  for (const m of modules) {
    const d = new Float64Array(m.out * m.in);
    const s = scale(m.path);
    for (let o = 0; o < m.out; o++)
      for (let i = 0; i < m.in; i++) {
        let x = 0;
        for (let k = 0; k < m.r; k++) x += m.B[o * m.r + k]! * m.A[k * m.in + i]!;
        d[o * m.in + i] = s * x;
      }
    out.set(m.path, d);
  }
  return out;
}

/** The ΔW of a saved adapter (PEFT's scale from its own config, as PEFT applies it). */
function savedDeltas(name: string) {
  const a = adapter(name);
  const ms = adapterModules(a.config, a.tensors, a.source);
  return { deltas: deltas(ms, (p) => ms.find((m) => m.path === p)!.scale), config: a.config, modules: ms };
}

/** Σ w·ΔW of the inputs, dense. */
function weightedSum(parts: Array<[string, number]>) {
  const sum = new Map<string, Float64Array>();
  for (const [name, w] of parts)
    for (const [p, d] of savedDeltas(name).deltas) {
      const acc = sum.get(p) ?? new Float64Array(d.length);
      d.forEach((x, i) => (acc[i]! += w * x));
      sum.set(p, acc);
    }
  return sum;
}

function sameDeltas(got: Map<string, Float64Array>, want: Map<string, Float64Array>, what: string) {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), `${what}: modules`);
  for (const [p, d] of want) assertClose(got.get(p)!, d, "f32", `${what} ${p}`);
}

const combine = (names: Array<[string, number]>, o: CombineOptions) =>
  combinePeftAdapters(
    names.map(([n, w]) => adapter(n, w)),
    o,
  );

describe("against PEFT's add_weighted_adapter", () => {
  it("cat: ΔW equals PEFT's and the weighted sum exactly; rank r1 + r2, scale 1, targets the union", () => {
    const c = combine(
      [
        ["a", 0.7],
        ["c", -0.4],
      ],
      { method: "cat" },
    );
    assert.equal(c.config.r, 6);
    assert.equal(c.config.lora_alpha, 6);
    assert.equal(c.config.use_rslora, false);
    assert.deepEqual(c.config.target_modules, ["o_proj", "q_proj", "v_proj"]);
    assert.equal(c.baseModel, "test/fixtures/models/llama_gqa_tied");
    const ours = deltas(c.modules);
    sameDeltas(ours, savedDeltas("peft_cat_ac").deltas, "cat vs PEFT");
    sameDeltas(
      ours,
      weightedSum([
        ["a", 0.7],
        ["c", -0.4],
      ]),
      "cat vs 0.7·a − 0.4·c",
    );
  });

  it("svd: the best rank-k approximation, as PEFT's (ΔW compared: the factors' signs are arbitrary)", () => {
    for (const [fixture, rank] of [
      ["peft_svd_ac", undefined],
      ["peft_svd_ac_r3", 3],
    ] as const) {
      const c = combine(
        [
          ["a", 0.7],
          ["c", -0.4],
        ],
        { method: "svd", rank },
      );
      assert.equal(c.config.r, rank ?? 4, "default: the largest input rank, as PEFT");
      sameDeltas(deltas(c.modules), savedDeltas(fixture).deltas, fixture);
    }
  });

  it("linear, ties (total, frequency), magnitude_prune: PEFT's A and B", () => {
    const cases: Array<[string, Array<[string, number]>, CombineOptions]> = [
      [
        "peft_linear_ab",
        [
          ["a", 0.6],
          ["b", -0.3],
        ],
        { method: "linear" },
      ],
      [
        "peft_ties_ab_total",
        [
          ["a", 0.6],
          ["b", -0.3],
        ],
        { method: "ties", density: 0.5 },
      ],
      [
        "peft_ties_ab_frequency",
        [
          ["a", 0.6],
          ["b", 0.9],
        ],
        { method: "ties", density: 0.4, majoritySignMethod: "frequency" },
      ],
      [
        "peft_magnitude_prune_ab",
        [
          ["a", 0.6],
          ["b", -0.3],
        ],
        { method: "magnitude_prune", density: 0.3 },
      ],
    ];
    for (const [fixture, parts, o] of cases) {
      const c = combine(parts, o);
      const peft = savedDeltas(fixture);
      assert.equal(c.config.r, 4, fixture);
      assert.equal(peft.config.lora_alpha / peft.config.r, 1, "PEFT's result has scale 1 too");
      const want = new Map(peft.modules.map((m) => [m.path, m]));
      assert.equal(c.modules.length, want.size, fixture);
      for (const m of c.modules) {
        assertClose(m.A, want.get(m.path)!.A, "f32", `${fixture} ${m.path} A`);
        assertClose(m.B, want.get(m.path)!.B, "f32", `${fixture} ${m.path} B`);
      }
    }
  });

  it("linear is not the weighted sum where two adapters share a module (the cross terms), exact where one does", () => {
    const c = combine(
      [
        ["a", 0.6],
        ["b", -0.3],
      ],
      { method: "linear" },
    );
    const ours = deltas(c.modules);
    const sum = weightedSum([
      ["a", 0.6],
      ["b", -0.3],
    ]);
    // v_proj (a only) and k_proj (b only): exact; q_proj (both): off by the cross terms
    for (const p of ["model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.k_proj"])
      assertClose(ours.get(p)!, sum.get(p)!, "f32", p);
    const q = "model.layers.0.self_attn.q_proj";
    const diff = ours.get(q)!.reduce((s, x, i) => s + Math.abs(x - sum.get(q)![i]!), 0);
    assert.ok(diff > 1e-3, `q_proj differs from the weighted sum by the cross terms (Σ|diff| = ${diff})`);
  });

  it("cat with rsLoRA is exact here; PEFT's keeps use_rslora with lora_alpha = r, so its update is √r times too large", () => {
    const c = combine(
      [
        ["d", 1],
        ["a", 1],
      ],
      { method: "cat" },
    );
    const ours = deltas(c.modules);
    sameDeltas(
      ours,
      weightedSum([
        ["d", 1],
        ["a", 1],
      ]),
      "cat of an rsLoRA adapter",
    );
    const peft = savedDeltas("peft_cat_da");
    assert.equal(peft.config.use_rslora, true);
    assert.equal(peft.config.lora_alpha, 6);
    const scaled = new Map([...ours].map(([p, d]) => [p, d.map((x) => x * Math.sqrt(6))]));
    sameDeltas(peft.deltas, scaled, "PEFT's cat = √6 · the sum");
  });
});

describe("properties", () => {
  it("svd at a rank >= the sum's rank is exact (equals cat)", () => {
    const parts: Array<[string, number]> = [
      ["a", 0.7],
      ["c", -0.4],
    ];
    const sum = weightedSum(parts);
    for (const rank of [6, 8])
      sameDeltas(deltas(combine(parts, { method: "svd", rank }).modules), sum, `svd rank ${rank}`);
  });

  it("svd of a sum whose rank exceeds min(out, in) still gives the best approximation (dense path)", () => {
    // three rank-3 updates of a 4×5 layer: the sum's rank is at most 4 < 9
    const rng = new Rng(1);
    const mod = (): ReportModule => ({
      path: "m",
      r: 3,
      in: 5,
      out: 4,
      alpha: 3,
      scale: 1,
      A: Float32Array.from({ length: 15 }, () => rng.normal()),
      B: Float32Array.from({ length: 12 }, () => rng.normal()),
    });
    const adapters: AdapterToCombine[] = [1, 2, 3].map((i) => ({
      name: `x${i}`,
      weight: i / 2,
      modules: [mod()],
    }));
    const want = new Float64Array(20);
    for (const a of adapters)
      deltas(a.modules)
        .get("m")!
        .forEach((x, i) => (want[i]! += a.weight * x));
    const got = combineModules(adapters, { method: "svd", rank: 4 })[0]!;
    assertClose(deltas([got]).get("m")!, want, "f32", "rank 4 of a 4×5 sum");
  });

  it("linear of one adapter is exactly w·ΔW (√w on each factor)", () => {
    sameDeltas(
      deltas(combine([["b", 0.25]], { method: "linear" }).modules),
      weightedSum([["b", 0.25]]),
      "linear b",
    );
  });

  it("magnitude pruning keeps ⌊density·n⌋ of the largest values; ties elects signs and averages agreeing entries", () => {
    const t = Float32Array.from([0.5, -3, 2, 0.1, -1]);
    assert.deepEqual([...magnitudePrune(t, 0.4)], [0, -3, 2, 0, 0]);
    assert.deepEqual([...magnitudePrune(t, 0.6)], [0, -3, 2, 0, -1]);
    assert.equal(magnitudePrune(t, 1), t);
    // hand-computed: entry 0 votes +1 (1 − 2 + 4 > 0): 1·1 and 0.5·4 agree -> (1 + 2) / 2
    const x = Float32Array.from([1, -1, 0]);
    const y = Float32Array.from([-2, -3, 0]);
    const z = Float32Array.from([4, 1, 0]);
    const got = mergeTensors([x, y, z], [1, 1, 0.5], { method: "ties", density: 1 }, new Rng(0));
    // entry 1: total −3 < 0, so −1 and −3 agree: (−1 − 3) / 2 = −2; entry 2: nothing agrees -> 0
    assert.deepEqual([...got], [1.5, -2, 0]);
    const freq = mergeTensors(
      [x, y, z],
      [1, 1, 0.5],
      { method: "ties", density: 1, majoritySignMethod: "frequency" },
      new Rng(0),
    );
    // entry 0 by frequency: two + against one − -> (1 + 2) / 2; entry 1: two − -> (−1 − 3) / 2
    assert.deepEqual([...freq], [1.5, -2, 0]);
    const freq2 = mergeTensors(
      [Float32Array.from([1]), Float32Array.from([1]), Float32Array.from([-5])],
      [1, 1, 1],
      { method: "ties", density: 1, majoritySignMethod: "frequency" },
      new Rng(0),
    );
    assert.deepEqual([...freq2], [1], "frequency counts signs, total would pick −5");
  });

  it("DARE keeps about a density's fraction, rescaled by 1/density, and is reproducible by seed", () => {
    const n = 20000;
    const rng = new Rng(9);
    const t = Float32Array.from({ length: n }, () => rng.normal());
    const density = 0.3;
    const kept = randomPrune(t, density, new Rng(42));
    let count = 0;
    kept.forEach((v, i) => {
      if (v !== 0) {
        count++;
        assert.equal(v, Math.fround(t[i]! / density));
      }
    });
    const sd = Math.sqrt(n * density * (1 - density));
    assert.ok(Math.abs(count - n * density) < 4 * sd, `kept ${count} of ${n}, expected about ${n * density}`);
    assert.deepEqual(randomPrune(t, density, new Rng(42)), kept, "same seed, same mask");
    assert.notDeepEqual(randomPrune(t, density, new Rng(43)), kept, "another seed, another mask");
    // through the whole method: seeded, reproducible, and another seed differs
    const run = (seed: number) =>
      combine(
        [
          ["a", 0.6],
          ["b", 0.9],
        ],
        { method: "dare_ties", density: 0.5, seed },
      ).modules.map((m) => [...m.A, ...m.B]);
    assert.deepEqual(run(7), run(7));
    assert.notDeepEqual(run(7), run(8));
    // density 1 prunes nothing: dare_linear is then linear
    const lin = combine(
      [
        ["a", 0.6],
        ["b", 0.9],
      ],
      { method: "linear" },
    ).modules;
    const dare1 = combine(
      [
        ["a", 0.6],
        ["b", 0.9],
      ],
      { method: "dare_linear", density: 1 },
    ).modules;
    assert.deepEqual(dare1, lin);
  });
});

describe("bad input: one error, naming the adapter and the value", () => {
  const refuse = (parts: PeftToCombine[], o: CombineOptions, ...want: RegExp[]) => {
    assert.throws(
      () => combinePeftAdapters(parts, o),
      (e: Error) => {
        for (const w of want) assert.match(e.message, w);
        return true;
      },
    );
  };

  it("different bases, unequal ranks, density, weights, DoRA", () => {
    refuse(
      [adapter("a"), { ...adapter("b"), baseModel: "other/model" }],
      { method: "cat" },
      /different base models: "a" names base_model_name_or_path "test\/fixtures\/models\/llama_gqa_tied", "b" names base_model_name_or_path "other\/model"/,
    );
    refuse(
      [adapter("a"), adapter("c")],
      { method: "linear" },
      /linear needs equal ranks: "model\.layers\.0\.self_attn\.v_proj" has r 4 in adapter "a" and r 2 in adapter "c"/,
    );
    for (const m of ["ties", "dare_linear", "dare_ties", "magnitude_prune"] as const)
      refuse([adapter("a"), adapter("c")], { method: m, density: 0.5 }, new RegExp(`${m} needs equal ranks`));
    for (const d of [0, -0.1, 1.5, Number.NaN])
      refuse(
        [adapter("a"), adapter("b")],
        { method: "ties", density: d },
        new RegExp(`density ${d} is outside \\(0, 1\\]`),
      );
    refuse([adapter("a"), adapter("b")], { method: "ties" }, /ties needs a density/);
    refuse(
      [adapter("a", Number.POSITIVE_INFINITY), adapter("b", Number.NaN)],
      { method: "cat" },
      /adapter "a": weight Infinity is not a finite number/,
      /adapter "b": weight NaN/,
    );
    const dora = adapter("b");
    refuse(
      [adapter("a"), { ...dora, config: { ...dora.config, use_dora: true } as typeof dora.config }],
      { method: "svd" },
      /adapter "b" .* is a DoRA adapter \(use_dora: true\)/,
    );
    refuse(
      [adapter("a")],
      { method: "svd", rank: 40 },
      /rank 40 is above min\(out, in\) = 16 of "model\.layers\.0\.self_attn\.v_proj"/,
    );
  });

  it("cat past a layer's min(out, in) is refused, pointing at svd", () => {
    const m = (r: number): ReportModule => ({
      path: "p",
      r,
      in: 3,
      out: 2,
      alpha: 1,
      scale: 1,
      A: new Float32Array(3 * r),
      B: new Float32Array(2 * r),
    });
    assert.throws(
      () =>
        combineModules(
          [
            { name: "x", weight: 1, modules: [m(1)] },
            { name: "y", weight: 1, modules: [m(2)] },
          ],
          { method: "cat" },
        ),
      /cat gives rank 3, above min\(out, in\) = 2 of "p", .*use svd \(--rank 2 or less\)/,
    );
    assert.equal(
      combineModules(
        [
          { name: "x", weight: 1, modules: [m(1)] },
          { name: "y", weight: 1, modules: [m(1)] },
        ],
        { method: "cat" },
      )[0]!.r,
      2,
    );
  });

  it("a module of different shapes in two adapters: different bases", () => {
    const m = (out: number): ReportModule => ({
      path: "p",
      r: 1,
      in: 3,
      out,
      alpha: 1,
      scale: 1,
      A: new Float32Array(3),
      B: new Float32Array(out),
    });
    assert.throws(
      () =>
        combineModules(
          [
            { name: "x", weight: 1, modules: [m(2)] },
            { name: "y", weight: 1, modules: [m(4)] },
          ],
          { method: "cat" },
        ),
      /"p" is \[2, 3\] in adapter "x" but \[4, 3\] in adapter "y": the adapters are for different base models/,
    );
  });
});
