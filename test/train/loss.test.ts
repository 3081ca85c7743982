/**
 * The loss runs the head only on the rows that have a target, fused with cross-entropy, and gives the
 * same loss and LoRA gradients as the head on every position.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  backward,
  crossEntropy,
  linearCrossEntropy,
  matmul,
  noGrad,
  scale,
  softcap,
} from "../../src/autograd/index.js";
import type { MatmulDims } from "../../src/kernels/index.js";
import { generate } from "../../src/models/generate.js";
import type { CausalLM } from "../../src/models/index.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { IGNORE, languageModelLoss, nextTokenTargets } from "../../src/train/loss.js";
import { assertClose, counting, loraModel } from "../helpers.js";

const configs: Record<string, Record<string, unknown>> = {
  gpt2: { model_type: "gpt2", vocab_size: 67, n_positions: 32, n_embd: 24, n_layer: 2, n_head: 4 },
  llama: {
    model_type: "llama",
    vocab_size: 71,
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    tie_word_embeddings: false,
  },
};
const attnTargets: Record<string, string[]> = { gpt2: ["c_attn"], llama: ["q_proj", "v_proj"] };

/** Two rows of six tokens; the mask hides a prompt and part of the second row. */
function batch(V: number) {
  const rng = new Rng(7);
  const ids = Int32Array.from({ length: 12 }, () => rng.nextU32() % V);
  const mask = [0, 0, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0];
  return { ids, shape: [2, 6] as [number, number], targets: nextTokenTargets(ids, 2, 6, mask) };
}

/** The loss and the trainable parameters' gradients after backward(lossFn()). */
function lossAndGrads(model: CausalLM, lossFn: () => Tensor) {
  const params = model.trainableParameters().map(([, t]) => t);
  for (const p of params) p.grad = null;
  const loss = lossFn();
  backward(loss);
  return { loss: loss.item(), grads: params.map((p) => p.grad!.slice()) };
}

describe("languageModelLoss: head and loss on target rows only", () => {
  for (const family of ["gpt2", "llama"]) {
    for (const targets of [attnTargets[family]!, [...attnTargets[family]!, "lm_head"]]) {
      for (const reduction of ["mean", "sum"] as const) {
        it(`${family}, LoRA on ${targets.join(", ")}, ${reduction}: same loss and LoRA grads as the head on every position`, () => {
          const model = loraModel(configs[family]!, targets);
          const { ids, shape, targets: t } = batch(model.vocabSize);
          const want = lossAndGrads(model, () => crossEntropy(model.forward(ids, shape), t, reduction));
          const got = lossAndGrads(model, () => languageModelLoss(model, ids, shape, t, reduction));
          assertClose([got.loss], [want.loss], "f32", "loss");
          assert.ok(got.grads.length >= 2);
          got.grads.forEach((g, i) => assertClose(g, want.grads[i]!, "f32", `grad ${i}`));
        });
      }
    }

    it(`${family}: the head's matmuls have M = the number of target rows, with and without the tape`, () => {
      for (const targets of [attnTargets[family]!, [...attnTargets[family]!, "lm_head"]]) {
        const model = loraModel(configs[family]!, targets);
        const { ids, shape, targets: t } = batch(model.vocabSize);
        const count = t.filter((x) => x !== IGNORE).length;
        for (const grad of [true, false]) {
          const headRows: number[] = [];
          const c = counting((k, args) => {
            const d = args[3] as MatmulDims;
            if (k === "matmul" && d.N === model.vocabSize) headRows.push(d.batch * d.M);
          });
          try {
            const loss = () => languageModelLoss(model, ids, shape, t);
            if (grad) loss();
            else noGrad(loss);
          } finally {
            c.restore();
          }
          // the fused head runs one matmul here (one chunk); a LoRA head runs its base and its B
          const calls = targets.includes("lm_head") ? 2 : 1;
          assert.deepEqual(headRows, Array(calls).fill(count), `${targets.join(",")} grad ${grad}`);
        }
      }
    });
  }

  it("greedy generation with the KV cache matches the argmax of full forwards", () => {
    for (const family of ["gpt2", "llama"]) {
      const model = loraModel(configs[family]!, attnTargets[family]!);
      const V = model.vocabSize;
      const prompt = [3, 1, 4, 1, 5];
      const got = [...generate(model, prompt, { maxTokens: 6, temperature: 0 })];
      const seq = [...prompt];
      for (let i = 0; i < 6; i++) {
        const logits = noGrad(() => model.forward(Int32Array.from(seq), [1, seq.length])).data;
        const row = logits.subarray((seq.length - 1) * V);
        seq.push(row.indexOf(Math.max(...row)));
      }
      assert.deepEqual(got, seq.slice(prompt.length), family);
    }
  });
});

describe("linearCrossEntropy", () => {
  const rng = new Rng(11);
  const [N, C, V] = [9, 5, 13];
  const targets = Int32Array.from({ length: N }, (_, i) => (i % 4 === 1 ? -1 : (i * 7) % V));

  for (const reduction of ["mean", "sum"] as const) {
    for (const chunk of [2 * V, 4 * V, N * V]) {
      it(`${reduction}, ${Math.ceil(N / (chunk / V))} chunk(s): equals crossEntropy(x·Wᵀ) in loss, dx and dW`, () => {
        const x = Tensor.randn([N, C], rng, 1, true);
        const w = Tensor.randn([V, C], rng, 1, true);
        const run = (f: () => Tensor) => {
          x.grad = null;
          w.grad = null;
          const loss = f();
          backward(scale(loss, 0.37)); // a seed other than 1 reaches the op
          return [loss.item(), x.grad!.slice(), w.grad!.slice()] as const;
        };
        const want = run(() => crossEntropy(matmul(x, w, { transB: true }), targets, reduction));
        const got = run(() => linearCrossEntropy(x, w, targets, reduction, { chunk }));
        assertClose([got[0]], [want[0]], "f32", "loss");
        assertClose(got[1], want[1], "f32", "dx");
        assertClose(got[2], want[2], "f32", "dW");
      });
    }
  }

  for (const chunk of [2 * V, N * V]) {
    it(`with a final logit soft cap, ${Math.ceil(N / (chunk / V))} chunk(s): equals crossEntropy(softcap(x·Wᵀ))`, () => {
      const x = Tensor.randn([N, C], rng, 1, true);
      const w = Tensor.randn([V, C], rng, 1, true);
      const run = (f: () => Tensor) => {
        x.grad = null;
        w.grad = null;
        const loss = f();
        backward(scale(loss, 0.37));
        return [loss.item(), x.grad!.slice(), w.grad!.slice()] as const;
      };
      const cap = 1.5; // the raw logits reach about ±3√C: the cap bites
      const want = run(() => crossEntropy(softcap(matmul(x, w, { transB: true }), cap), targets));
      const got = run(() => linearCrossEntropy(x, w, targets, "mean", { chunk, softcap: cap }));
      const uncapped = run(() => linearCrossEntropy(x, w, targets, "mean", { chunk }));
      assert.ok(Math.abs(uncapped[0] - want[0]) > 1e-2, "the cap changes the loss");
      assertClose([got[0]], [want[0]], "f32", "loss");
      assertClose(got[1], want[1], "f32", "dx");
      assertClose(got[2], want[2], "f32", "dW");
    });
  }

  it("without the tape it computes no gradient: one matmul per chunk", () => {
    const x = Tensor.randn([N, C], rng, 1, true);
    const w = Tensor.randn([V, C], rng);
    const c = counting();
    try {
      noGrad(() => linearCrossEntropy(x, w, targets, "sum", { chunk: 3 * V }));
    } finally {
      c.restore();
    }
    assert.equal(c.calls.get("matmul"), 3);
    assert.equal(c.calls.get("crossEntropyBackward") ?? 0, 0);
  });

  it("rejects mismatched shapes, out-of-range targets and an all-ignored mean", () => {
    const x = Tensor.randn([2, C], rng);
    const w = Tensor.randn([V, C], rng);
    assert.throws(() => linearCrossEntropy(x, Tensor.randn([V, C + 1], rng), Int32Array.of(0, 1)), /need x/);
    assert.throws(() => linearCrossEntropy(x, w, Int32Array.of(0, V)), /outside the vocabulary/);
    assert.throws(() => linearCrossEntropy(x, w, Int32Array.of(-1, -1)), /every target is ignored/);
    assert.equal(linearCrossEntropy(x, w, Int32Array.of(-1, -1), "sum").item(), 0);
  });
});
