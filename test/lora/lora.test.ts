/** The LoRA paper's claims and PEFT's invariants, as tests. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backward, mul, noGrad, sum } from "../../src/autograd/index.js";
import {
  applyLoRA,
  fuseLoRA,
  LoRALinear,
  type LoraConfig,
  loraLayers,
  mergeLoRA,
  parameterReport,
  unmergeLoRA,
} from "../../src/lora/index.js";
import { buildModel, type CausalLM, randomParams } from "../../src/models/index.js";
import { Linear } from "../../src/nn/layers.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { createOptimizer } from "../../src/train/optim.js";
import { assertClose } from "../helpers.js";

const gpt2Config = { model_type: "gpt2", vocab_size: 67, n_positions: 32, n_embd: 24, n_layer: 2, n_head: 4 };
const llamaConfig = {
  model_type: "llama",
  vocab_size: 71,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  tie_word_embeddings: false,
};
const cfg = (over: Partial<LoraConfig>): LoraConfig => ({
  r: 4,
  lora_alpha: 8,
  lora_dropout: 0,
  target_modules: ["c_attn"],
  use_rslora: false,
  init_lora_weights: "gaussian",
  ...over,
});

const gpt2 = () => buildModel(gpt2Config, randomParams(1, 0.2));
const llama = () => buildModel(llamaConfig, randomParams(2, 0.2));
const ids = Int32Array.from([5, 17, 3, 66, 0, 9, 12, 44, 1, 2]);
const run = (m: CausalLM) => noGrad(() => m.forward(ids, [2, 5]));

/** A LoRA layer with non-zero B, on a random frozen base. */
function layerWithB(r = 3, inF = 7, outF = 5, alpha = 6) {
  const rng = new Rng(11);
  const layer = LoRALinear.fromBase(new Linear(Tensor.randn([outF, inF], rng), Tensor.randn([outF], rng)), {
    r,
    alpha,
    init: "gaussian",
    rng,
  });
  layer.lora_B.data.set(Tensor.randn([outF, r], rng).data);
  return layer;
}

describe("LoRA at initialisation", () => {
  for (const init of ["gaussian", "kaiming"] as const) {
    it(`B = 0 makes the wrapped model equal the base exactly (${init} A)`, () => {
      for (const [make, targets] of [
        [gpt2, "all-linear"],
        [llama, ["q_proj", "v_proj"]],
      ] as const) {
        const base = run(make());
        const m = make();
        applyLoRA(m, cfg({ target_modules: targets as string[] | string }), { init });
        assert.deepEqual(run(m).data, base.data);
        for (const [, l] of loraLayers(m))
          assert.ok(
            l.lora_A.data.some((v) => v !== 0),
            "A is random",
          );
      }
    });
  }

  it("A is Gaussian with std 1/r (PEFT's normal_(std=1/r)), or kaiming-uniform within ±1/√in", () => {
    const base = new Linear(Tensor.zeros([64, 256]));
    const g = LoRALinear.fromBase(base, { r: 16, alpha: 16, init: "gaussian", rng: new Rng(1) }).lora_A.data;
    const std = Math.sqrt(g.reduce((s, v) => s + v * v, 0) / g.length);
    assert.ok(Math.abs(std - 1 / 16) < 0.003, `gaussian std ${std}`);
    const k = LoRALinear.fromBase(base, { r: 16, alpha: 16, init: "kaiming", rng: new Rng(1) }).lora_A.data;
    assert.ok(k.every((v) => Math.abs(v) <= 1 / 16));
    assert.ok(Math.max(...k) > 0.06, "kaiming fills its range");
  });

  it("at step 0, dL/dA is exactly zero and dL/dB is not", () => {
    const m = gpt2();
    applyLoRA(m, cfg({}));
    const loss = sum(mul(m.forward(ids, [2, 5]), Tensor.randn([2, 5, 67], new Rng(5))));
    backward(loss);
    for (const [, l] of loraLayers(m)) {
      assert.ok(
        l.lora_A.grad!.every((v) => v === 0),
        "dL/dA must be exactly 0 when B = 0",
      );
      assert.ok(
        l.lora_B.grad!.some((v) => v !== 0),
        "dL/dB must be non-zero",
      );
    }
  });

  it("one plain SGD step from B = 0 leaves A unchanged and moves B", () => {
    const m = llama();
    applyLoRA(m, cfg({ target_modules: ["q_proj", "v_proj"] }));
    const before = loraLayers(m).map(([, l]) => [l.lora_A.data.slice(), l.lora_B.data.slice()] as const);
    const opt = createOptimizer("sgd", m.trainableParameters(), { lr: 0.1 });
    backward(sum(mul(m.forward(ids, [2, 5]), Tensor.randn([2, 5, 71], new Rng(6)))));
    opt.step();
    loraLayers(m).forEach(([, l], i) => {
      assert.deepEqual(l.lora_A.data, before[i]![0]);
      assert.ok(l.lora_B.data.some((v, j) => v !== before[i]![1][j]));
    });
  });
});

describe("LoRA gradients equal the paper's closed forms", () => {
  it("dL/dA = s·Bᵀ(dL/dh)xᵀ and dL/dB = s·(dL/dh)(Ax)ᵀ", () => {
    const layer = layerWithB();
    const rng = new Rng(12);
    const N = 4;
    const x = Tensor.randn([N, 7], rng);
    const G = Tensor.randn([N, 5], rng); // dL/dh for L = sum(h * G)
    backward(sum(mul(layer.forward(x), G)));
    const { r, scaling: s } = layer;
    const A = layer.lora_A.data;
    const B = layer.lora_B.data;
    const dA = new Float64Array(r * 7);
    const dB = new Float64Array(5 * r);
    for (let n = 0; n < N; n++) {
      const ax = Array.from({ length: r }, (_, k) => {
        let t = 0;
        for (let i = 0; i < 7; i++) t += A[k * 7 + i]! * x.data[n * 7 + i]!;
        return t;
      });
      for (let k = 0; k < r; k++) {
        let btg = 0; // (Bᵀ g)_k
        for (let o = 0; o < 5; o++) btg += B[o * r + k]! * G.data[n * 5 + o]!;
        for (let i = 0; i < 7; i++) dA[k * 7 + i]! += s * btg * x.data[n * 7 + i]!;
        for (let o = 0; o < 5; o++) dB[o * r + k]! += s * G.data[n * 5 + o]! * ax[k]!;
      }
    }
    assertClose(layer.lora_A.grad!, dA, "f32", "dL/dA");
    assertClose(layer.lora_B.grad!, dB, "f32", "dL/dB");
    assert.equal(layer.base_layer.weight.grad, null, "the base weight gets no gradient");
  });

  it("rsLoRA scales by alpha/√r", () => {
    const l = LoRALinear.fromBase(new Linear(Tensor.zeros([8, 8])), { r: 4, alpha: 8, rslora: true });
    assert.equal(l.scaling, 4);
    assert.equal(LoRALinear.fromBase(new Linear(Tensor.zeros([8, 8])), { r: 4, alpha: 8 }).scaling, 2);
  });
});

describe("merge, unmerge, fuse", () => {
  it("merged ≈ unmerged ≈ fused (1e-5 relative); unmerge restores W0 (1e-6)", () => {
    const layer = layerWithB();
    const x = Tensor.randn([6, 7], new Rng(13));
    const w0 = layer.base_layer.weight.data.slice();
    const unmerged = noGrad(() => layer.forward(x)).data;
    const fused = noGrad(() => layer.fuse().forward(x)).data;
    layer.merge();
    const merged = noGrad(() => layer.forward(x)).data;
    for (const [got, label] of [
      [merged, "merged"],
      [fused, "fused"],
    ] as const) {
      got.forEach((v, i) =>
        assert.ok(Math.abs(v - unmerged[i]!) <= 1e-5 * Math.abs(unmerged[i]!) + 1e-6, label),
      );
    }
    assert.throws(() => layer.merge(), /already merged/);
    layer.unmerge();
    layer.base_layer.weight.data.forEach((v, i) =>
      assert.ok(Math.abs(v - w0[i]!) <= 1e-6, "unmerge restores W0"),
    );
    assert.throws(() => layer.unmerge(), /not merged/);
  });

  it("refuses a non-finite merge and leaves W0 untouched", () => {
    const layer = layerWithB();
    const w0 = layer.base_layer.weight.data.slice();
    layer.lora_B.data[0] = Number.POSITIVE_INFINITY;
    assert.throws(() => layer.merge(), /non-finite/);
    assert.deepEqual(layer.base_layer.weight.data, w0);
    assert.equal(layer.isMerged, false);
  });

  it("whole models: merge, unmerge and fuse agree with the adapted model", () => {
    const m = llama();
    applyLoRA(m, cfg({ target_modules: "all-linear" }));
    for (const [, l] of loraLayers(m)) l.lora_B.data.set(Tensor.randn(l.lora_B.shape, new Rng(9), 0.05).data);
    const want = run(m).data;
    mergeLoRA(m);
    assertClose(run(m).data, want, "f32", "merged");
    unmergeLoRA(m);
    fuseLoRA(m);
    assert.equal(loraLayers(m).length, 0, "fuse leaves no LoRA layers");
    assertClose(run(m).data, want, "f32", "fused");
  });
});

describe("injecting LoRA", () => {
  it("freezes everything but A and B, with exact counts and PEFT's report line", () => {
    const m = gpt2();
    const total = parameterReport(m).total;
    const paths = applyLoRA(m, cfg({}));
    assert.deepEqual(paths, ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]);
    const names = m.trainableParameters().map(([n]) => n);
    assert.deepEqual(names, [
      "transformer.h.0.attn.c_attn.lora_A",
      "transformer.h.0.attn.c_attn.lora_B",
      "transformer.h.1.attn.c_attn.lora_A",
      "transformer.h.1.attn.c_attn.lora_B",
    ]);
    const trainable = 2 * (4 * 24 + 72 * 4);
    const report = parameterReport(m);
    assert.equal(report.trainable, trainable);
    assert.equal(report.total, total + trainable);
    assert.equal(
      report.line,
      `trainable params: 768 || all params: ${(total + trainable).toLocaleString("en-US")} || trainable%: ${((100 * trainable) / (total + trainable)).toFixed(4)}`,
    );
  });

  it("matches by exact name, suffix, regex, all-linear, layer indices and exclusions", () => {
    const targets = (over: Partial<LoraConfig>) => applyLoRA(llama(), cfg(over));
    assert.deepEqual(targets({ target_modules: ["model.layers.1.self_attn.q_proj"] }), [
      "model.layers.1.self_attn.q_proj",
    ]);
    assert.equal(targets({ target_modules: ["q_proj", "v_proj"] }).length, 6);
    assert.deepEqual(targets({ target_modules: String.raw`.*\.2\.mlp\.(up|down)_proj` }), [
      "model.layers.2.mlp.up_proj",
      "model.layers.2.mlp.down_proj",
    ]);
    const all = targets({ target_modules: "all-linear" });
    assert.equal(all.length, 21);
    assert.ok(!all.includes("lm_head"), "all-linear leaves the output head alone");
    assert.deepEqual(targets({ target_modules: ["q_proj"], layers_to_transform: [0, 2] }), [
      "model.layers.0.self_attn.q_proj",
      "model.layers.2.self_attn.q_proj",
    ]);
    assert.equal(
      targets({ target_modules: "all-linear", exclude_modules: ["down_proj", "o_proj"] }).length,
      15,
    );
  });

  it("applies per-module rank and alpha overrides", () => {
    const m = llama();
    applyLoRA(
      m,
      cfg({
        target_modules: ["q_proj", "v_proj"],
        rank_pattern: { v_proj: 2 },
        alpha_pattern: { "layers\\.0\\.self_attn\\.q_proj": 32 },
      }),
    );
    const byPath = Object.fromEntries(loraLayers(m));
    assert.equal(byPath["model.layers.1.self_attn.v_proj"]!.r, 2);
    assert.equal(byPath["model.layers.1.self_attn.q_proj"]!.r, 4);
    assert.equal(byPath["model.layers.0.self_attn.q_proj"]!.alpha, 32);
    assert.equal(byPath["model.layers.1.self_attn.q_proj"]!.alpha, 8);
  });

  it("a target that matches nothing lists the modules that exist, even beside one that matches", () => {
    assert.throws(
      () => applyLoRA(llama(), cfg({ target_modules: ["qproj"] })),
      /matched no module.*q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head/,
    );
    assert.throws(
      () => applyLoRA(llama(), cfg({ target_modules: ["q_proj", "vproj"] })),
      /\["vproj"\] matched no module/,
    );
    assert.throws(
      () => applyLoRA(llama(), cfg({ target_modules: ["q_proj"], layers_to_transform: [7] })),
      /in layers \[7\]/,
    );
    assert.throws(() => applyLoRA(llama(), cfg({ target_modules: "(" })), /not a valid regular expression/);
  });

  it("rejects bad ranks, alphas and dropout, naming the value", () => {
    const base = new Linear(Tensor.zeros([5, 7]));
    assert.throws(
      () => LoRALinear.fromBase(base, { r: 0, alpha: 1 }),
      /rank r must be a positive integer, got 0/,
    );
    assert.throws(
      () => LoRALinear.fromBase(base, { r: 6, alpha: 1 }),
      /r=6 is larger than min\(in, out\) = min\(7, 5\) = 5/,
    );
    assert.throws(() => LoRALinear.fromBase(base, { r: 2, alpha: 0 }), /lora_alpha must be > 0, got 0/);
    assert.throws(
      () => LoRALinear.fromBase(base, { r: 2, alpha: 1, dropout: 1 }),
      /lora_dropout must be in \[0, 1\), got 1/,
    );
    const m = llama();
    applyLoRA(m, cfg({ target_modules: ["q_proj"] }));
    assert.throws(() => applyLoRA(m, cfg({ target_modules: ["v_proj"] })), /already has LoRA layers/);
  });

  it("dropout applies only in training mode", () => {
    const layer = layerWithB();
    const l2 = LoRALinear.withWeights(layer.base_layer, layer.lora_A, layer.lora_B, {
      r: 3,
      alpha: 6,
      dropout: 0.5,
      rng: new Rng(1),
    });
    const x = Tensor.randn([4, 7], new Rng(2));
    const evalOut = noGrad(() => l2.forward(x)).data;
    assert.deepEqual(evalOut, noGrad(() => layer.forward(x)).data);
    l2.train();
    assert.notDeepEqual(noGrad(() => l2.forward(x)).data, evalOut);
  });
});
