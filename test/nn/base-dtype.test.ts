/** 16-bit frozen base weights (--base-dtype): tensor storage, the ops that take them, castBaseWeights, merge, loading. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { add, embedding, gelu, matmul, mul, reshape, rmsNorm, sum } from "../../src/autograd/ops.js";
import { backward, noGrad } from "../../src/autograd/tape.js";
import { modelTensors } from "../../src/io/model-saver.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { readModelWeights } from "../../src/io/node/safetensors-file.js";
import { backend, setBackend } from "../../src/kernels/index.js";
import { roundToBf16 } from "../../src/kernels/ref/half.js";
import { refBackend } from "../../src/kernels/ref/index.js";
import type { LoraConfig } from "../../src/lora/config.js";
import { applyLoRA, loraLayers, mergeLoRA } from "../../src/lora/inject.js";
import { buildModel, type CausalLM, randomParams } from "../../src/models/index.js";
import { castBaseWeights, resolveBaseDtype } from "../../src/nn/base-dtype.js";
import type { Linear } from "../../src/nn/layers.js";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, type HalfDType } from "../../src/tensor/dtype.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { languageModelLoss, nextTokenTargets } from "../../src/train/loss.js";
import { assertClose, fixturesDir } from "../helpers.js";

const HALVES: HalfDType[] = ["bf16", "f16"];
const rounded = (x: Float32Array, dtype: HalfDType) =>
  Float32Array.from(x, (v) => (dtype === "bf16" ? bf16ToF32(f32ToBf16(v)) : f16ToF32(f32ToF16(v))));
const bytesOf = (m: CausalLM) => m.parameters().reduce((s, p) => s + p.byteLength, 0);

const TINY = {
  model_type: "llama",
  vocab_size: 50,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  tie_word_embeddings: true,
};
const tinyModel = (tied = true) => buildModel({ ...TINY, tie_word_embeddings: tied }, randomParams(3, 0.2));
const LORA: LoraConfig = {
  r: 4,
  lora_alpha: 8,
  lora_dropout: 0,
  target_modules: ["q_proj", "v_proj", "down_proj"],
  use_rslora: false,
  init_lora_weights: true,
};

describe("16-bit tensors", () => {
  for (const dtype of HALVES) {
    it(`${dtype}: toHalf rounds to nearest even, toFloat32 decodes exactly, and the bytes halve`, () => {
      const t = Tensor.randn([3, 5], new Rng(1), 3);
      const h = t.toHalf(dtype);
      assert.equal(h.dtype, dtype);
      assert.equal(h.byteLength * 2, t.byteLength);
      assert.deepEqual(h.toFloat32().data, rounded(t.data, dtype));
      assert.deepEqual(h.toFloat32().toHalf(dtype).half!.bits, h.half!.bits, "decode then encode is exact");
      assert.deepEqual(h.toArray(), Array.from(rounded(t.data, dtype)));
      assert.deepEqual(h.clone().half!.bits, h.half!.bits);
      assert.notEqual(h.clone().half!.bits, h.half!.bits, "clone copies");
    });
  }

  it("a 16-bit tensor has no f32 data and never requires grad, saying what to do", () => {
    const h = Tensor.randn([2, 3], new Rng(0)).toHalf("bf16");
    assert.throws(() => h.data, /stored as bf16 .*--base-dtype.*toFloat32\(\)/);
    assert.throws(() => {
      h.requiresGrad = true;
    }, /bf16 tensor \[2, 3\] cannot require grad.*toFloat32\(\).*--base-dtype f32/);
    assert.throws(() => new Tensor(h.half!, [2, 3], true), /cannot require grad/);
    assert.throws(() => h.clone(true), /cannot require grad/);
  });

  it("every op but matmul (operand b) and embedding refuses one, naming the op", () => {
    const h = Tensor.randn([2, 3], new Rng(0)).toHalf("f16");
    const x = Tensor.randn([2, 3], new Rng(1));
    assert.throws(() => add(x, h), /^Error: add: input \[2, 3\] is a f16 frozen weight.*toFloat32\(\)/);
    assert.throws(() => mul(h, x), /^Error: mul: /);
    assert.throws(() => gelu(h), /^Error: gelu: /);
    assert.throws(() => sum(h), /^Error: sum: /);
    assert.throws(() => reshape(h, [3, 2]), /^Error: reshape: /);
    assert.throws(() => rmsNorm(x, Tensor.randn([3], new Rng(2)).toHalf("bf16"), 1e-5), /^Error: rmsNorm: /);
    assert.throws(() => matmul(h, x, { transB: true }), /^Error: matmul \(operand a\): /);
    assert.throws(() => matmul(x, h, { transA: true }), /needs transA false/);
  });
});

describe("matmul and embedding with a 16-bit weight", () => {
  for (const dtype of HALVES) {
    it(`${dtype}: forward and dx equal f32 math on the decoded weight${dtype === "bf16" ? " and bf16-rounded activations" : ""}`, () => {
      const rng = new Rng(7);
      const w = Tensor.randn([6, 8], rng).toHalf(dtype); // [out, in]
      const wf = w.toFloat32();
      const x = Tensor.randn([2, 3, 8], rng, 1, true);
      const r = Tensor.randn([2, 3, 6], rng).data; // dL/dy
      const y = matmul(x, w, { transB: true });
      backward(y, r);
      const act = (v: Float32Array) => (dtype === "bf16" ? roundToBf16(v) : v);
      const want = noGrad(() => matmul(new Tensor(act(x.data), x.shape), wf, { transB: true }));
      assertClose(y.data, want.data, "f32", "y");
      const dx = noGrad(() => matmul(new Tensor(act(r), [2, 3, 6]), wf));
      assertClose(x.grad!, dx.data, "f32", "dx");
      assert.equal(w.grad, null);
      // non-transposed b, batched rows
      const b = Tensor.randn([8, 5], rng).toHalf(dtype);
      const y2 = noGrad(() => matmul(x, b));
      const want2 = noGrad(() => matmul(new Tensor(act(x.data), x.shape), b.toFloat32()));
      assertClose(y2.data, want2.data, "f32", "y (b not transposed)");
    });

    it(`${dtype}: embedding decodes the rows exactly and records nothing`, () => {
      const table = Tensor.randn([10, 4], new Rng(3)).toHalf(dtype);
      const ids = Int32Array.from([3, 0, 9, 3]);
      const out = embedding(table, ids, [2, 2]);
      assert.deepEqual(out.data, embedding(table.toFloat32(), ids, [2, 2]).data);
      assert.equal(out.requiresGrad, false);
    });
  }
});

describe("castBaseWeights", () => {
  it("halves the frozen weights' bytes, keeps LoRA f32 and trainable, and keeps a tied head shared", () => {
    const model = tinyModel();
    applyLoRA(model, LORA, { rng: new Rng(0) });
    const trainable = model.trainableParameters();
    const before = bytesOf(model);
    const baseBytes = model
      .namedParameters()
      .filter(([name, p]) => !p.requiresGrad && !/norm/.test(name))
      .reduce((s, [, p]) => s + p.byteLength, 0);
    const report = castBaseWeights(model, "bf16");
    assert.equal(report.tensors, 2 * 7 + 1, "7 Linear weights per layer, and the tied embedding once");
    assert.equal(report.bytesBefore, baseBytes);
    assert.equal(report.bytesAfter, baseBytes / 2);
    assert.equal(bytesOf(model), before - baseBytes / 2);
    const m = model as unknown as { lm_head: Linear; model: { embed_tokens: { weight: Tensor } } };
    assert.equal(m.lm_head.weight, m.model.embed_tokens.weight, "still one tensor");
    assert.equal(m.lm_head.weight.dtype, "bf16");
    assert.deepEqual(model.trainableParameters(), trainable);
    for (const [name, p] of model.namedParameters()) {
      const wantHalf = !p.requiresGrad && !/norm/.test(name);
      assert.equal(p.dtype, wantHalf ? "bf16" : "f32", name);
    }
    // back to f32: the bf16 values, decoded
    const lm = m.lm_head.weight;
    castBaseWeights(model, "f32");
    assert.deepEqual(m.lm_head.weight.data, lm.toFloat32().data);
    assert.equal(m.lm_head.weight, m.model.embed_tokens.weight);
  });

  it("leaves a fully trainable model alone (--full), and auto is f32 unless the backend has fast bf16", () => {
    const model = tinyModel().unfreeze();
    assert.equal(castBaseWeights(model, "f16").tensors, 0);
    const active = backend();
    try {
      setBackend({ ...refBackend, name: "slow-bf16", fastBf16: false });
      assert.equal(resolveBaseDtype("auto"), "f32");
      setBackend({ ...refBackend, name: "fast-bf16", fastBf16: true });
      assert.equal(resolveBaseDtype("auto"), "bf16");
      assert.equal(resolveBaseDtype("f16"), "f16");
    } finally {
      setBackend(active);
    }
    castBaseWeights(tinyModel(), "bf16"); // a frozen model converts
    const frozen = tinyModel();
    castBaseWeights(frozen, "bf16");
    assert.throws(() => frozen.unfreeze(), /cannot require grad/);
  });

  for (const dtype of HALVES) {
    it(`${dtype}: a LoRA train step gives finite gradients close to the f32 base's`, () => {
      const grads = (half: boolean) => {
        const model = tinyModel(false);
        applyLoRA(model, LORA, { rng: new Rng(0) });
        for (const [, l] of loraLayers(model))
          l.lora_B.data.set(Tensor.randn(l.lora_B.shape, new Rng(5), 0.1).data);
        if (half) castBaseWeights(model, dtype);
        const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 7) % 50);
        const loss = languageModelLoss(model, ids, [2, 6], nextTokenTargets(ids, 2, 6));
        backward(loss);
        return { loss: loss.item(), grads: model.trainableParameters().map(([, p]) => p.grad!) };
      };
      const f32 = grads(false);
      const half = grads(true);
      assertClose([half.loss], [f32.loss], dtype, "loss");
      half.grads.forEach((g, i) => {
        assert.ok(g.every(Number.isFinite));
        assertClose(g, f32.grads[i]!, dtype, `grad ${i}`);
      });
    });

    it(`${dtype}: merge re-rounds to the base dtype, keeps its guards, and fuse keeps the dtype`, () => {
      const model = tinyModel();
      applyLoRA(model, LORA, { rng: new Rng(0) });
      for (const [, l] of loraLayers(model))
        l.lora_B.data.set(Tensor.randn(l.lora_B.shape, new Rng(5), 0.1).data);
      castBaseWeights(model, dtype);
      const ids = Int32Array.from({ length: 8 }, (_, i) => (i * 5) % 50);
      const logits = () => noGrad(() => model.forward(ids, [1, 8])).data;
      const want = logits();
      const [, layer] = loraLayers(model)[0]!;
      const w0 = layer.base_layer.weight;
      const bits0 = w0.half!.bits.slice();
      const expected = w0.toFloat32().data.map((v, i) => v + layer.delta()[i]!);
      mergeLoRA(model);
      assert.equal(layer.base_layer.weight, w0, "merged in place");
      assert.equal(w0.dtype, dtype);
      assert.deepEqual(w0.toFloat32().data, rounded(expected, dtype));
      assertClose(logits(), want, dtype, "merged logits");
      assert.throws(() => layer.merge(), /already merged/);
      const fused = layer.fuse();
      assert.equal(fused.weight.dtype, dtype);
      assert.deepEqual(fused.weight.half!.bits, w0.half!.bits);
      layer.unmerge();
      const original = new Tensor({ dtype, bits: bits0 }, w0.shape).toFloat32().data;
      assertClose(w0.toFloat32().data, original, dtype, "unmerged");
      // a merge whose result does not fit the dtype is refused, and W0 stays as it was
      layer.lora_B.data.fill(dtype === "f16" ? 1e3 : Number.NaN);
      layer.lora_A.data.fill(1e3);
      const bits1 = w0.half!.bits.slice();
      assert.throws(() => layer.merge(), /merge refused: the merged weight has a non-finite value/);
      assert.deepEqual(w0.half!.bits, bits1);
    });
  }
});

describe("loading and saving a 16-bit base", () => {
  const dir = join(fixturesDir, "models/llama_bf16");
  it("a BF16 checkpoint loads its bits directly, computes as f32-load-then-cast, and saves them back exactly", () => {
    const half = loadModelFolder(dir, { baseDtype: "bf16" });
    const f32 = loadModelFolder(dir);
    castBaseWeights(f32.model, "bf16");
    const { tensors } = readModelWeights(dir);
    const embed = half.model.namedParameters().find(([n]) => n === "model.embed_tokens.weight")![1];
    assert.equal(embed.dtype, "bf16");
    const file = tensors.get("model.embed_tokens.weight")!.bytes;
    const bits = embed.half!.bits;
    assert.deepEqual(new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength), file.slice());
    // no second copy: every 16-bit weight is a view into the one buffer the file was read into
    const buffers = new Set(
      half.model
        .namedParameters()
        .filter(([, p]) => p.half)
        .map(([, p]) => p.half!.bits.buffer),
    );
    assert.equal(buffers.size, 1);
    const ids = Int32Array.from([1, 5, 9, 30, 2]);
    const a = noGrad(() => half.model.forward(ids, [1, 5])).data;
    const b = noGrad(() => f32.model.forward(ids, [1, 5])).data;
    assert.deepEqual(a, b);
    for (const t of modelTensors(half.model, half.config, half.dtypes)) {
      const src = tensors.get(t.name)!;
      assert.equal(t.dtype, src.dtype, t.name);
      if (t.data instanceof Uint8Array) assert.deepEqual(t.data, src.bytes.slice(), t.name);
    }
  });

  it("an f32 checkpoint converts after loading; norms stay f32", () => {
    const { model } = loadModelFolder(join(fixturesDir, "models/llama_untied"), { baseDtype: "f16" });
    for (const [name, p] of model.namedParameters())
      assert.equal(p.dtype, /norm/.test(name) ? "f32" : "f16", name);
  });
});
