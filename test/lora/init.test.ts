/**
 * init_lora_weights (src/lora/init.ts): the kaiming and gaussian draws by their distributions, the SVD
 * and QR of lowrank.ts against their definitions, and PiSSA, pissa_niter_4 and OLoRA against what the
 * real PEFT 0.21 computes from the same W0 (scripts/make_init_fixtures.py, test/fixtures/init/).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseSafetensors, tensorToFloat32 } from "../../src/io/safetensors.js";
import { layerInit } from "../../src/lora/config.js";
import { plainLoraConfig } from "../../src/lora/convert.js";
import { isLoraInit, mutatedInit, parseInitLoraWeights, randomA } from "../../src/lora/init.js";
import { LoRALinear } from "../../src/lora/layer.js";
import { qr, randomizedSvd, svd } from "../../src/lora/lowrank.js";
import { Linear } from "../../src/nn/layers.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { assertClose, fixturesDir } from "../helpers.js";

const DIR = join(fixturesDir, "init");
const read = (name: string) => {
  const file = parseSafetensors(readFileSync(join(DIR, name)), name);
  return (key: string) => {
    const e = file.tensors.get(key);
    assert.ok(e, `${name} has no ${key}`);
    return { data: tensorToFloat32(e), shape: e.shape };
  };
};
const W0 = read("layers.safetensors");
const SCALING = 2; // the fixtures' r = 4, lora_alpha = 8
const R = 4;

const stats = (x: ArrayLike<number>) => {
  let sum = 0;
  let sq = 0;
  for (let i = 0; i < x.length; i++) sum += x[i]!;
  const mean = sum / x.length;
  for (let i = 0; i < x.length; i++) sq += (x[i]! - mean) ** 2;
  return { mean, std: Math.sqrt(sq / x.length) };
};

/** B·A [out, in] in f64. */
function product(B: ArrayLike<number>, A: ArrayLike<number>, out: number, r: number, inF: number) {
  const p = new Float64Array(out * inF);
  for (let i = 0; i < out; i++)
    for (let j = 0; j < inF; j++) {
      let s = 0;
      for (let c = 0; c < r; c++) s += B[i * r + c]! * A[c * inF + j]!;
      p[i * inF + j] = s;
    }
  return p;
}

/** Asserts A and B equal PEFT's up to one sign per component (row c of A with column c of B). */
function sameUpToSign(
  got: { A: Float32Array; B: Float32Array },
  want: { A: Float32Array; B: Float32Array },
  out: number,
  inF: number,
  label: string,
) {
  for (let c = 0; c < R; c++) {
    const row = (a: Float32Array) => a.subarray(c * inF, (c + 1) * inF);
    const col = (b: Float32Array) => Float32Array.from({ length: out }, (_, i) => b[i * R + c]!);
    const sign = Math.sign(row(got.A)[0]!) === Math.sign(row(want.A)[0]!) ? 1 : -1;
    assertClose(
      row(got.A).map((x) => sign * x),
      row(want.A),
      "f32",
      `${label} A row ${c}`,
    );
    assertClose(
      col(got.B).map((x) => sign * x),
      col(want.B),
      "f32",
      `${label} B column ${c}`,
    );
  }
}

describe("kaiming and gaussian", () => {
  it("gaussian draws A ~ N(0, (1/r)²), PEFT's nn.init.normal_(std=1/r), not 1/√r", () => {
    for (const r of [4, 16]) {
      const a = randomA("gaussian", r, 20_000, new Rng(7));
      const { mean, std } = stats(a);
      // 80k-320k draws: the sample std is within ~0.3% of the true one (3 standard errors)
      assert.ok(Math.abs(std * r - 1) < 0.01, `r=${r}: std ${std}, want ${1 / r}`);
      assert.ok(Math.abs(mean) < 5 / r / Math.sqrt(a.length), `r=${r}: mean ${mean}`);
    }
    const layer = LoRALinear.fromBase(new Linear(Tensor.zeros([8, 4096]), null), {
      r: 8,
      alpha: 16,
      init: "gaussian",
      rng: new Rng(1),
    });
    assert.ok(Math.abs(stats(layer.lora_A.data).std * 8 - 1) < 0.02);
    assert.ok(layer.lora_B.data.every((x) => x === 0));
  });

  it("kaiming is kaiming_uniform_(a=√5) on [r, in]: U(±1/√in), variance 1/(3·in)", () => {
    // gain √(2/(1+a²)) = √(1/3); bound = gain·√3/√fan_in = 1/√in
    const inF = 400;
    const a = randomA("kaiming", 64, inF, new Rng(3));
    const bound = 1 / Math.sqrt(inF);
    assert.ok(a.every((x) => Math.abs(x) <= bound));
    assert.ok(Math.max(...a) > 0.999 * bound && Math.min(...a) < -0.999 * bound);
    const { std } = stats(a);
    assert.ok(Math.abs(std / (bound / Math.sqrt(3)) - 1) < 0.01, `std ${std}`);
  });
});

describe("SVD and QR (lowrank.ts)", () => {
  const rng = new Rng(11);
  const M = Float64Array.from({ length: 7 * 5 }, () => rng.normal());
  for (const [m, n, at] of [
    [7, 5, (i: number, j: number) => M[i * 5 + j]!],
    [5, 7, (i: number, j: number) => M[j * 5 + i]!],
  ] as const) {
    it(`svd of a ${m}×${n} matrix: U·S·Vᵀ = M, orthonormal U and V, S descending`, () => {
      const { u, s, v, k } = svd(m, n, at);
      assert.equal(k, 5);
      for (let c = 1; c < k; c++) assert.ok(s[c - 1]! >= s[c]!);
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          let x = 0;
          for (let c = 0; c < k; c++) x += u[i * k + c]! * s[c]! * v[j * k + c]!;
          assert.ok(Math.abs(x - at(i, j)) < 1e-12, `(${i}, ${j})`);
        }
      for (const [q, rows] of [
        [u, m],
        [v, n],
      ] as const)
        for (let a = 0; a < k; a++)
          for (let b = 0; b < k; b++) {
            let d = 0;
            for (let i = 0; i < rows; i++) d += q[i * k + a]! * q[i * k + b]!;
            assert.ok(Math.abs(d - (a === b ? 1 : 0)) < 1e-12);
          }
    });
    it(`qr of a ${m}×${n} matrix: Q·R = M, orthonormal Q, R upper trapezoidal`, () => {
      const { q, r, k } = qr(m, n, at);
      for (let i = 0; i < k; i++) for (let j = 0; j < Math.min(i, n); j++) assert.equal(r[i * n + j], 0);
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          let x = 0;
          for (let c = 0; c < k; c++) x += q[i * k + c]! * r[c * n + j]!;
          assert.ok(Math.abs(x - at(i, j)) < 1e-12);
        }
    });
  }

  it("randomized SVD converges to the exact top singular triplets as the iterations grow", () => {
    const w = W0("wide");
    const at = (i: number, j: number) => w.data[i * 20 + j]!;
    const exact = svd(12, 20, at);
    const rng = new Rng(5);
    const err = (niter: number) => {
      const f = randomizedSvd(12, 20, at, R, niter, () => rng.normal());
      return Math.max(...Array.from({ length: R }, (_, c) => Math.abs(f.s[c]! - exact.s[c]!) / exact.s[c]!));
    };
    const e0 = err(0);
    const e30 = err(30);
    assert.ok(e30 < 1e-6 && e30 < e0, `relative error of S: niter 0 ${e0}, niter 30 ${e30}`);
  });
});

describe("PiSSA and OLoRA against PEFT 0.21", () => {
  for (const [name, out, inF] of [
    ["wide", 12, 20],
    ["tall", 20, 12],
  ] as const) {
    const w = W0(name).data;
    const peft = (kind: string) => {
      const f = read(`${kind}.safetensors`);
      return {
        A: f(`${name}.lora_A`).data,
        B: f(`${name}.lora_B`).data,
        residual: f(`${name}.residual`).data,
      };
    };

    it(`pissa on ${name} [${out}, ${inF}]: B·A, the residual, and A and B up to sign`, () => {
      const got = mutatedInit("pissa", w, out, inF, R, SCALING);
      const want = peft("pissa");
      assertClose(product(got.B, got.A, out, R, inF), product(want.B, want.A, out, R, inF), "f32", "B·A");
      assertClose(got.residual, want.residual, "f32", "residual");
      sameUpToSign(got, want, out, inF, "pissa");
      // the division by the scaling: s·B·A is the top-4 part of W0, so W0 - residual = s·B·A
      assertClose(
        product(got.B, got.A, out, R, inF).map((x) => SCALING * x),
        w.map((x, i) => x - got.residual[i]!),
        "f32",
        "s·B·A",
      );
    });

    it(`pissa_niter_4 on ${name}: W0 = residual + s·B·A; B·A as close to PiSSA's as PEFT's is`, () => {
      const got = mutatedInit("pissa_niter_4", w, out, inF, R, SCALING);
      const want = peft("pissa_niter_4");
      assertClose(
        got.residual.map((x, i) => x + SCALING * product(got.B, got.A, out, R, inF)[i]!),
        w,
        "f32",
        "residual + s·B·A",
      );
      // both draw a random test matrix (ours from Rng, PEFT's from torch), so each is a different
      // approximation of the exact top-4 part: compare their distances to it
      const exact = peft("pissa");
      const ref = product(exact.B, exact.A, out, R, inF);
      const dist = (x: { A: Float32Array; B: Float32Array }) => {
        const p = product(x.B, x.A, out, R, inF);
        let d = 0;
        let n = 0;
        for (let i = 0; i < p.length; i++) {
          d += (p[i]! - ref[i]!) ** 2;
          n += ref[i]! ** 2;
        }
        return Math.sqrt(d / n);
      };
      const ours = dist(got);
      const theirs = dist(want);
      assert.ok(ours < 0.05 && theirs < 0.05, `relative distance to PiSSA: ours ${ours}, PEFT's ${theirs}`);
    });

    it(`olora on ${name}: A = R[:r], B = Q[:, :r] with LAPACK's signs, and the residual`, () => {
      const got = mutatedInit("olora", w, out, inF, R, SCALING);
      const want = peft("olora");
      assertClose(got.A, want.A, "f32", "A");
      assertClose(got.B, want.B, "f32", "B");
      assertClose(got.residual, want.residual, "f32", "residual");
    });
  }

  it("a LoRALinear with init pissa leaves the residual in its base layer and keeps A0, B0", () => {
    const w = W0("wide").data;
    const base = new Linear(new Tensor(w.slice(), [12, 20]), null);
    const layer = LoRALinear.fromBase(base, { r: R, alpha: 8, init: "pissa" });
    const want = read("pissa.safetensors");
    assertClose(base.weight.data, want("wide.residual").data, "f32", "base weight");
    assert.deepEqual(layer.initial!.A, layer.lora_A.data);
    assert.equal(layer.initial!.init, "pissa");
    // the layer computes W0·x at the start, as every LoRA init does
    const x = new Tensor(
      Float32Array.from({ length: 20 }, (_, i) => Math.sin(i)),
      [1, 20],
    );
    const ref = new Linear(new Tensor(w.slice(), [12, 20]), null).forward(x).data;
    assertClose(layer.forward(x).data, ref, "f32", "forward");
  });
});

describe("init_lora_weights values", () => {
  it("keeps PEFT's values, reads the W0-preserving ones as true, refuses loftq, corda and unknowns", () => {
    for (const v of [true, false, "gaussian", "pissa", "pissa_niter_16", "olora"])
      assert.deepEqual(parseInitLoraWeights(v), { init: v });
    for (const v of [undefined, null, "eva", "orthogonal", "mica"])
      assert.deepEqual(parseInitLoraWeights(v), { init: true });
    const problem = (v: unknown) => {
      const p = parseInitLoraWeights(v);
      assert.ok("problem" in p, `${JSON.stringify(v)} was accepted`);
      return p.problem;
    };
    assert.match(problem("loftq"), /4-bit/);
    assert.match(problem("corda"), /path_initial_model_for_weight_conversion/);
    assert.match(problem("pissa_niter_x"), /"pissa_niter_x"/);
    assert.match(problem(3), /got 3/);
    assert.ok(isLoraInit("pissa_niter_0") && !isLoraInit("pissa_niter_") && !isLoraInit("kaiming_x"));
  });

  it("olora on a fan_in_fan_out base (GPT-2's Conv1D) is refused; pissa and the rest are not", () => {
    assert.throws(
      () => layerInit({ init_lora_weights: "olora", fan_in_fan_out: true }),
      /"olora".*fan_in_fan_out.*use "pissa"/,
    );
    assert.equal(layerInit({ init_lora_weights: "pissa", fan_in_fan_out: true }), "pissa");
    assert.equal(layerInit({ init_lora_weights: true }), "kaiming");
    assert.equal(layerInit({ init_lora_weights: false }), "kaiming");
  });

  it("the converted config: rank 2r and the same scale per module, as PEFT writes it", () => {
    const base = {
      r: 2,
      lora_alpha: 4,
      lora_dropout: 0,
      target_modules: ["q_proj"],
      use_rslora: false,
      init_lora_weights: "pissa" as const,
      rank_pattern: { v_proj: 4 },
      alpha_pattern: { v_proj: 3 },
    };
    const plain = plainLoraConfig(base);
    assert.deepEqual(
      [plain.r, plain.lora_alpha, plain.rank_pattern, plain.alpha_pattern, plain.init_lora_weights],
      [4, 8, { v_proj: 8 }, { v_proj: 6 }, true],
    );
    // PEFT's own converted config of the fixture (r=2, lora_alpha=4)
    const peft = JSON.parse(readFileSync(join(DIR, "llama-pissa/converted/adapter_config.json"), "utf8"));
    assert.deepEqual([plain.r, plain.lora_alpha], [peft.r, peft.lora_alpha]);
    // rsLoRA: alpha/√r stays, so alpha × √2 (PEFT refuses patterns here; every alpha × √2 is exact)
    const rs = plainLoraConfig({ ...base, use_rslora: true });
    assert.ok(Math.abs(rs.lora_alpha / Math.sqrt(rs.r) - 4 / Math.sqrt(2)) < 1e-12);
    assert.ok(Math.abs(rs.alpha_pattern!.v_proj! / Math.sqrt(rs.rank_pattern!.v_proj!) - 3 / 2) < 1e-12);
  });
});
