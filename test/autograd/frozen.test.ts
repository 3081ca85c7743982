/** Frozen weights cost nothing extra: no gradient buffer, and no kernel call computes one. */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { backward, noGrad, sum } from "../../src/autograd/index.js";
import { Linear } from "../../src/nn/layers.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { counting } from "../helpers.js";

describe("frozen weights", () => {
  let restore = () => {};
  afterEach(() => restore());

  it("y = x·Wᵀ with W frozen computes only dL/dx: one matmul in backward, no grad on W", () => {
    const rng = new Rng(3);
    const lin = new Linear(Tensor.randn([5, 7], rng)); // frozen: requiresGrad false
    const x = Tensor.randn([3, 7], rng, 1, true);
    const c = counting();
    restore = c.restore;
    const loss = sum(lin.forward(x));
    const forwardMatmuls = c.calls.get("matmul") ?? 0;
    backward(loss);
    assert.equal(forwardMatmuls, 1);
    assert.equal(c.calls.get("matmul"), 2, "backward must run exactly one matmul (dL/dx)");
    assert.equal(lin.weight.grad, null);
    assert.ok(x.grad);
  });

  it("with W trainable, backward runs two matmuls (dL/dx and dL/dW)", () => {
    const rng = new Rng(4);
    const lin = new Linear(Tensor.randn([5, 7], rng, 1, true));
    const x = Tensor.randn([3, 7], rng, 1, true);
    const c = counting();
    restore = c.restore;
    backward(sum(lin.forward(x)));
    assert.equal(c.calls.get("matmul"), 3);
    assert.ok(lin.weight.grad);
  });

  it("nothing is recorded when no input needs a gradient, or under noGrad", () => {
    const rng = new Rng(5);
    const lin = new Linear(Tensor.randn([5, 7], rng));
    const y = lin.forward(Tensor.randn([3, 7], rng));
    assert.equal(y.requiresGrad, false);
    const w = Tensor.randn([5, 7], rng, 1, true);
    const z = noGrad(() => new Linear(w).forward(Tensor.randn([3, 7], rng)));
    assert.equal(z.requiresGrad, false);
    assert.throws(() => backward(sum(y)), /does not require grad/);
  });
});
