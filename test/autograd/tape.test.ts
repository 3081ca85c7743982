/**
 * What backward runs and what the tape keeps: no kernel below the lowest adapted layer, no dW for a
 * frozen matrix, no data a gradient rule does not read, and nothing a finished backward used.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { add, backward, gelu, matmul, reshape, sum } from "../../src/autograd/index.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { languageModelLoss, nextTokenTargets } from "../../src/train/loss.js";
import { counting, loraModel } from "../helpers.js";

setFlagsFromString("--expose-gc");
const fullGc = runInNewContext("gc") as () => void;
/** A WeakRef keeps its target alive until the current job ends, so collect on a later turn. */
const gc = async () => {
  await new Promise((r) => setImmediate(r));
  fullGc();
};

const C = 24;
const V = 67;
const L = 3;
const gpt2 = { model_type: "gpt2", vocab_size: V, n_positions: 32, n_embd: C, n_layer: L, n_head: 4 };

/** Kernel calls and matmul output sizes of one backward of the LM loss, LoRA on c_attn of `layer`. */
function backwardCalls(layer: number) {
  const model = loraModel(gpt2, ["c_attn"], [layer]);
  const T = 5;
  const ids = Int32Array.from({ length: T }, (_, i) => (i * 13) % V);
  const loss = languageModelLoss(model, ids, [1, T], nextTokenTargets(ids, 1, T));
  const matmulOuts: number[] = [];
  const c = counting((k, args) => {
    if (k === "matmul") matmulOuts.push((args[0] as Float32Array).length);
  });
  try {
    backward(loss);
  } finally {
    c.restore();
  }
  const frozen = model.namedParameters().filter(([, p]) => !p.requiresGrad && p.ndim === 2);
  return { calls: c.calls, matmulOuts, frozenSizes: new Set(frozen.map(([, p]) => p.size)), T };
}

describe("backward does only the work LoRA needs", () => {
  for (const layer of [0, 1, 2]) {
    it(`LoRA on layer ${layer} of ${L}: no backward kernel below it, no dW for a frozen matrix`, () => {
      const { calls, matmulOuts, frozenSizes, T } = backwardCalls(layer);
      const above = L - 1 - layer;
      // one attention and one GELU per layer from the adapted one up
      assert.equal(calls.get("attentionBackward"), L - layer);
      assert.equal(calls.get("geluBackward"), L - layer);
      // ln_1 and ln_2 of the layers above, ln_2 of the adapted one (its ln_1 output needs no gradient), ln_f
      assert.equal(calls.get("layerNormBackward"), 2 * above + 2);
      // adapted layer: dA, dB and d(A·x), then dx through c_proj, c_fc, mlp.c_proj; above: dx through 4 Linears
      assert.equal(calls.get("matmul"), 6 + 4 * above);
      for (const n of matmulOuts) {
        assert.ok(
          !frozenSizes.has(n) || n === T * C,
          `a backward matmul wrote ${n} values, a frozen matrix's size`,
        );
      }
      assert.ok(!frozenSizes.has(T * C), "pick T so that no activation has a frozen matrix's size");
      assert.equal(calls.get("embeddingBackward"), 1, "only the gather of the target rows");
    });
  }
});

describe("the tape keeps only what backward reads", () => {
  const rng = new Rng(5);
  const w1 = Tensor.randn([64, 32], rng); // frozen
  const w2 = Tensor.randn([16, 64], rng); // frozen

  /** x -> y = x·W1ᵀ -> f(y)·W2ᵀ -> sum; returns the loss and a weak reference to y's data. */
  function chain(f: (y: Tensor) => Tensor) {
    const x = Tensor.randn([8, 32], rng, 1, true);
    let y: Tensor | null = matmul(x, w1, { transB: true });
    const yData = new WeakRef(y.data);
    const loss = sum(matmul(f(y), w2, { transB: true }));
    y = null;
    return { x, loss, yData };
  }

  it("an activation no rule reads is freed after forward (matmul with a frozen weight does not keep x)", async () => {
    const { x, loss, yData } = chain((y) => y);
    await gc();
    assert.equal(yData.deref(), undefined, "y's data should be gone: matmul(y, W2 frozen) reads only W2");
    backward(loss);
    assert.equal(x.grad?.length, 8 * 32);
  });

  it("an activation a rule reads is kept until backward has used it, then released", async () => {
    const { x, loss, yData } = chain(gelu);
    await gc();
    assert.ok(yData.deref(), "gelu's backward reads its input");
    backward(loss);
    await gc();
    assert.equal(yData.deref(), undefined, "backward should release what it used");
    assert.ok(x.grad);
  });

  it("gives the same gradients as with every activation kept", () => {
    const x = Tensor.randn([8, 32], rng, 1, true);
    const y = matmul(x, w1, { transB: true });
    backward(sum(matmul(gelu(y), w2, { transB: true })));
    // d/dx of sum(gelu(x·W1ᵀ)·W2ᵀ) by hand: (gelu'(y) ⊙ (1·W2)) · W1
    const colSums = new Float32Array(64);
    for (let o = 0; o < 16; o++) for (let j = 0; j < 64; j++) colSums[j]! += w2.data[o * 64 + j]!;
    const dgelu = (v: number) => {
      const k = Math.sqrt(2 / Math.PI);
      const u = k * (v + 0.044715 * v ** 3);
      const t = Math.tanh(u);
      return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * k * (1 + 3 * 0.044715 * v * v);
    };
    for (let i = 0; i < 8; i++) {
      for (let c = 0; c < 32; c++) {
        let want = 0;
        for (let j = 0; j < 64; j++) want += dgelu(y.data[i * 64 + j]!) * colSums[j]! * w1.data[j * 32 + c]!;
        assert.ok(Math.abs(x.grad![i * 32 + c]! - want) <= 1e-3 * (1 + Math.abs(want)), `dx[${i}, ${c}]`);
      }
    }
  });

  it("a second backward through a released graph fails clearly", () => {
    const x = Tensor.randn([8, 32], rng, 1, true);
    const y = gelu(matmul(x, w1, { transB: true }));
    backward(sum(y));
    assert.throws(() => backward(sum(y)), /released by an earlier backward/);
  });
});

describe("a gradient passed on unchanged (add, reshape) is handed on, not copied", () => {
  it("x + y: each input gets its own array; x + x gets twice the gradient; the caller's seed is left alone", () => {
    const x = new Tensor(Float32Array.of(1, 2, 3), [3], true);
    const y = new Tensor(Float32Array.of(4, 5, 6), [3], true);
    const seed = Float32Array.of(0.5, -1, 2);
    backward(reshape(add(x, y), [1, 3]), seed);
    assert.deepEqual([...x.grad!], [0.5, -1, 2]);
    assert.deepEqual([...y.grad!], [0.5, -1, 2]);
    assert.notEqual(x.grad, y.grad, "x and y share a gradient array");
    assert.ok(x.grad !== seed && y.grad !== seed, "the seed was handed to a leaf");
    x.grad![0] = 9;
    assert.equal(y.grad![0], 0.5);
    assert.deepEqual([...seed], [0.5, -1, 2]);

    const z = new Tensor(Float32Array.of(1, 1), [2], true);
    backward(add(z, z), Float32Array.of(3, 4));
    assert.deepEqual([...z.grad!], [6, 8]);
  });
});
