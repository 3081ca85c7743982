/**
 * DoRA (use_dora) against the real PEFT: test/fixtures/dora/linear.json (scripts/make_dora_fixtures.py)
 * holds a PEFT DoRA Linear's forward, gradients (A, B, magnitude, x), dropout path and merged weight.
 * Also the invariants: B = 0 and m = ‖W0‖ gives the base bit for bit; merge/unmerge round trip; the norm
 * without forming W0 + s·B·A against the direct sum.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { backward, mul, noGrad, sum } from "../../src/autograd/index.js";
import { doraWeightNorm, rowSquares } from "../../src/lora/dora-norm.js";
import { DoRALinear } from "../../src/lora/index.js";
import { Linear } from "../../src/nn/layers.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { assertClose, fixturesDir } from "../helpers.js";

interface T {
  shape: number[];
  data: number[];
}
interface Pass {
  out: T;
  grad_A: T;
  grad_B: T;
  grad_magnitude: T;
  grad_x: T;
}
const fx = JSON.parse(readFileSync(join(fixturesDir, "dora", "linear.json"), "utf8")) as {
  r: number;
  lora_alpha: number;
  W0: T;
  bias: T;
  A: T;
  B: T;
  magnitude_init: T;
  magnitude: T;
  x: T;
  grad_out: T;
  eval: Pass;
  dropout: Pass & { p: number; mask: T };
  merged: T;
};
const t = (v: T, grad = false) => new Tensor(Float32Array.from(v.data), v.shape, grad);
const base = () => new Linear(t(fx.W0), t(fx.bias));
const layer = (opts: { magnitude?: Tensor; dropout?: number; rng?: Rng } = {}) =>
  DoRALinear.withWeights(base(), t(fx.A, true), t(fx.B, true), {
    r: fx.r,
    alpha: fx.lora_alpha,
    magnitude: opts.magnitude ?? t(fx.magnitude, true),
    dropout: opts.dropout,
    rng: opts.rng,
  });

/** A random stream whose uniforms drop exactly the elements PEFT's fixed mask dropped. */
class MaskRng extends Rng {
  private i = 0;
  constructor(private readonly mask: number[]) {
    super(0);
  }
  override uniform(): number {
    return this.mask[this.i++] === 0 ? 0 : 0.999;
  }
}

function check(l: DoRALinear, want: Pass, label: string) {
  const x = t(fx.x, true);
  const out = l.forward(x);
  assertClose(out.data, want.out.data, "f32", `${label} out`);
  backward(sum(mul(out, t(fx.grad_out))));
  assertClose(l.lora_A.grad!, want.grad_A.data, "f32", `${label} dA`);
  assertClose(l.lora_B.grad!, want.grad_B.data, "f32", `${label} dB`);
  assertClose(l.lora_magnitude_vector.grad!, want.grad_magnitude.data, "f32", `${label} dm`);
  assertClose(x.grad!, want.grad_x.data, "f32", `${label} dx`);
}

describe("DoRA layer vs PEFT (tiny Linear, r 3, alpha 6)", () => {
  it("the magnitude starts at ‖W0 + s·B·A‖, as PEFT's", () => {
    const l = DoRALinear.withWeights(base(), t(fx.A, true), t(fx.B, true), { r: fx.r, alpha: fx.lora_alpha });
    assert.ok(
      fx.B.data.some((v) => v !== 0),
      "the fixture's B is not zero",
    );
    assertClose(l.lora_magnitude_vector.data, fx.magnitude_init.data, "f32", "m at init");
    assert.ok(l.lora_magnitude_vector.requiresGrad, "the magnitude is trained");
  });

  it("forward and gradients of A, B, the magnitude and x (eval: no dropout)", () => {
    const l = layer();
    check(l, fx.eval, "eval");
  });

  it("the dropout path in training: base(x) + (f - 1)·W0·x' + f·s·B·A·x', with PEFT's mask", () => {
    const l = layer({ dropout: fx.dropout.p, rng: new MaskRng(fx.dropout.mask.data) });
    l.train();
    check(l, fx.dropout, "dropout");
    // the same layer in eval mode ignores dropout
    const e = layer({ dropout: fx.dropout.p, rng: new MaskRng(fx.dropout.mask.data) });
    assertClose(noGrad(() => e.forward(t(fx.x))).data, fx.eval.out.data, "f32", "eval ignores dropout");
  });

  it("merge writes PEFT's merged weight; unmerge restores W0; fuse is the merged Linear", () => {
    const l = layer();
    const x = t(fx.x);
    const before = noGrad(() => l.forward(x)).data;
    const fused = l.fuse();
    assertClose(fused.weight.data, fx.merged.data, "f32", "fused weight");
    l.merge();
    assert.ok(l.isMerged);
    assertClose(l.base_layer.weight.data, fx.merged.data, "f32", "merged weight");
    assertClose(noGrad(() => l.forward(x)).data, before, "f32", "merged forward");
    assert.throws(() => l.merge(), /already merged/);
    l.unmerge();
    assertClose(l.base_layer.weight.data, fx.W0.data, "f32", "W0 after unmerge");
    assertClose(noGrad(() => l.forward(x)).data, before, "f32", "unmerged forward");
    assert.throws(() => l.unmerge(), /not merged/);
  });

  it("B = 0 and m = ‖W0‖ gives the base layer bit for bit (fresh layer, any dropout in eval)", () => {
    for (const init of ["kaiming", "gaussian"] as const) {
      const b = base();
      const l = DoRALinear.fromBase(b, { r: 3, alpha: 6, init, rng: new Rng(4) });
      assert.ok(l.lora_B.data.every((v) => v === 0));
      const x = t(fx.x);
      assert.deepEqual(noGrad(() => l.forward(x)).data, noGrad(() => b.forward(x)).data, init);
      // m = ‖W0‖ row by row
      const want = rowSquares(b.weight).map(Math.sqrt);
      assertClose(l.lora_magnitude_vector.data, want, "f32", "m = ‖W0‖");
    }
  });

  it("a magnitude of the wrong shape is refused", () => {
    assert.throws(
      () => layer({ magnitude: Tensor.zeros([4], true) }),
      /lora_magnitude_vector.*\[4\].*expected \[5\]/,
    );
  });
});

describe("DoRA weight norm without forming W0 + s·B·A", () => {
  /** ‖W0_i + s·(B·A)_i‖ summed directly in f64. */
  function direct(W0: Tensor, A: Tensor, B: Tensor, s: number): number[] {
    const [out, inF] = W0.shape as [number, number];
    const r = A.shape[0]!;
    const w = W0.half ? W0.toFloat32().data : W0.data;
    return Array.from({ length: out }, (_, i) => {
      let sq = 0;
      for (let k = 0; k < inF; k++) {
        let v = w[i * inF + k]!;
        for (let j = 0; j < r; j++) v += s * B.data[i * r + j]! * A.data[j * inF + k]!;
        sq += v * v;
      }
      return Math.sqrt(sq);
    });
  }

  it("matches the direct sum on random weights (f32 tolerance)", () => {
    const rng = new Rng(7);
    const W0 = Tensor.randn([40, 64], rng, 0.05);
    const A = Tensor.randn([8, 64], rng, 0.2);
    const B = Tensor.randn([40, 8], rng, 0.02);
    const got = doraWeightNorm(W0, rowSquares(W0), A, B, 2);
    assertClose(got, direct(W0, A, B, 2), "f32", "norm");
    // and on a bf16 base, against the direct sum over its decoded values
    const half = W0.toHalf("bf16");
    assertClose(doraWeightNorm(half, rowSquares(half), A, B, 2), direct(half, A, B, 2), "bf16", "bf16 norm");
  });

  it("rows where s·B·A almost cancels W0 are summed directly", () => {
    const rng = new Rng(8);
    const inF = 16;
    const A = Tensor.randn([2, inF], rng, 1);
    const B = Tensor.randn([3, 2], rng, 1);
    const s = 0.5;
    // W0 row 0 = -s·(B·A)_0 + a tiny residual; rows 1, 2 random
    const w = Tensor.randn([3, inF], rng, 1).data;
    for (let k = 0; k < inF; k++) {
      let d = 0;
      for (let j = 0; j < 2; j++) d += B.data[j]! * A.data[j * inF + k]!;
      w[k] = -s * d + 1e-4 * (k % 3);
    }
    const W0 = new Tensor(w, [3, inF]);
    const got = doraWeightNorm(W0, rowSquares(W0), A, B, s);
    const want = direct(W0, A, B, s);
    assert.ok(want[0]! < 1e-2 * Math.sqrt(rowSquares(W0)[0]!), "row 0 cancels");
    // the cancelling row keeps its relative precision (the three-term sum would lose it)
    assert.ok(Math.abs(got[0]! - want[0]!) <= 1e-3 * want[0]!, `row 0: ${got[0]} vs ${want[0]}`);
    assertClose(got, want, "f32", "norms");
  });
});

describe("DoRA layer: the norm is kept while nothing changes, and a 16-bit base", () => {
  it("forward reuses the norm until A, B or W0 change (generation computes it once)", () => {
    const l = layer();
    const first = l.weightNorm();
    assert.equal(l.weightNorm(), first, "the same weights: the kept norm");
    l.lora_A.data[0]! += 0.5; // an optimizer's in-place update
    const moved = l.weightNorm();
    assert.notEqual(moved, first);
    assert.notDeepEqual(Array.from(moved), Array.from(first));
    l.base_layer.weight = l.base_layer.weight.toHalf("bf16"); // --base-dtype after the adapter
    assert.notEqual(l.weightNorm(), moved);
  });

  it("on a bf16 base: the forward, gradients and merge agree with the f32 layer to bf16 tolerance", () => {
    const f32 = layer();
    const bf16 = layer();
    bf16.base_layer.weight = bf16.base_layer.weight.toHalf("bf16");
    const x = t(fx.x);
    assertClose(noGrad(() => bf16.forward(x)).data, noGrad(() => f32.forward(x)).data, "bf16", "forward");
    backward(sum(mul(bf16.forward(x), t(fx.grad_out))));
    assertClose(bf16.lora_magnitude_vector.grad!, fx.eval.grad_magnitude.data, "bf16", "dm");
    assertClose(bf16.lora_A.grad!, fx.eval.grad_A.data, "bf16", "dA");
    bf16.merge();
    assert.equal(bf16.base_layer.weight.dtype, "bf16");
    assertClose(bf16.base_layer.weight.toFloat32().data, fx.merged.data, "bf16", "merged in bf16");
  });
});
