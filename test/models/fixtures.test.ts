/**
 * Models and adapters against the independent PyTorch reference (scripts/make_fixtures.py):
 * logits, losses and LoRA gradients of tiny GPT-2, Llama (GQA, tied and untied, explicit head_dim,
 * rsLoRA), Qwen2 (q/k/v biases) and a BF16 checkpoint, all at f32 tolerance.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { backward, noGrad } from "../../src/autograd/index.js";
import { loadAdapter, readAdapterConfig, saveAdapter } from "../../src/io/node/adapter-folder.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { adapterTensors } from "../../src/io/peft.js";
import { type Backend, backend, setBackend } from "../../src/kernels/index.js";
import { nativeAddon, nativeStatus } from "../../src/kernels/native/node/addon.js";
import { createNativeBackend } from "../../src/kernels/native/node/backend.js";
import { refBackend } from "../../src/kernels/ref/index.js";
import { wasmAvailable, wasmBackend } from "../../src/kernels/wasm/index.js";
import { loraLayers, mergeLoRA } from "../../src/lora/index.js";
import { modelFamily } from "../../src/models/index.js";
import { languageModelLoss, nextTokenTargets } from "../../src/train/loss.js";
import { createOptimizer } from "../../src/train/optim.js";
import { assertClose, fixturesDir } from "../helpers.js";

interface Arr {
  shape: number[];
  data: number[];
}
interface Expected {
  input_ids: number[][];
  logits_base: Arr;
  loss_base: number;
  logits_adapter?: Arr;
  /** PEFT's merge_and_unload() logits (the newer families' fixtures) */
  logits_merged?: Arr;
  loss_adapter?: number;
  grads_adapter?: Record<string, Arr>;
  /** torch.optim.SGD, one step from the adapter (the newer families' fixtures) */
  sgd?: { lr: number; loss_after: number; weights_after: Record<string, Arr> };
}

/**
 * Made by the real transformers + PEFT (scripts/make_family_fixtures.py): rope scaling, Qwen3, SmolLM3,
 * Mistral's sliding window, Gemma 3 (with attention and final logit soft-capping; the text part of a
 * multimodal Gemma3ForConditionalGeneration), Phi-3 (fused projections, partial rotary, LongRoPE).
 */
const FAMILIES = [
  "llama3_rope",
  "llama_rope_linear",
  "llama_rope_dynamic",
  "qwen3",
  "smollm3",
  "mistral_window",
  "gemma3_text",
  "gemma3_softcap",
  "gemma3_multimodal",
  "phi3",
];
const MODELS = [
  "gpt2",
  "gpt2_noprefix",
  "llama_gqa_tied",
  "llama_untied",
  "qwen2",
  "llama_bf16",
  ...FAMILIES,
];

function setup(name: string) {
  const dir = join(fixturesDir, "models", name);
  const expected = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8")) as Expected;
  const B = expected.input_ids.length;
  const T = expected.input_ids[0]!.length;
  const ids = Int32Array.from(expected.input_ids.flat());
  const folder = loadModelFolder(dir);
  const targets = nextTokenTargets(ids, B, T);
  const shape = [B, T] as const;
  return { dir, expected, ids, shape, targets, folder, model: folder.model };
}

describe("models vs PyTorch", () => {
  for (const name of MODELS) {
    it(`${name}: base logits and loss`, () => {
      const { expected, ids, shape, targets, folder, model } = setup(name);
      // a multimodal folder's vision tower and projector are not built (see the multimodal test below)
      const towers = modelFamily(folder.config).checkpoint.towers ?? [];
      assert.deepEqual(
        folder.unused.filter((n) => !towers.some((t) => t.pattern.test(n))),
        [],
        "every checkpoint tensor is used or known to be ignorable",
      );
      const logits = noGrad(() => model.forward(ids, shape));
      assert.deepEqual(logits.shape, expected.logits_base.shape);
      assertClose(logits.data, expected.logits_base.data, "f32", `${name} logits`);
      const loss = noGrad(() => languageModelLoss(model, ids, shape, targets)).item();
      assertClose([loss], [expected.loss_base], "f32", `${name} loss`);
    });
  }

  for (const name of ["gpt2", "llama_gqa_tied", "llama_untied", "qwen2", ...FAMILIES]) {
    it(`${name}: PEFT adapter logits, loss, LoRA gradients, merge and save/load`, () => {
      const { dir, expected, ids, shape, targets, folder, model } = setup(name);
      const defaults = modelFamily(folder.config).defaultTargets;
      const { paths } = loadAdapter(model, join(dir, "adapter"), defaults);
      assert.equal(paths.length * 2, Object.keys(expected.grads_adapter!).length);
      const logits = noGrad(() => model.forward(ids, shape));
      assertClose(logits.data, expected.logits_adapter!.data, "f32", `${name} adapter logits`);
      const loss = languageModelLoss(model, ids, shape, targets);
      assertClose([loss.item()], [expected.loss_adapter!], "f32", `${name} adapter loss`);
      backward(loss);
      for (const [path, layer] of loraLayers(model)) {
        const key = `base_model.model.${path}`;
        assertClose(
          layer.lora_A.grad!,
          expected.grads_adapter![`${key}.lora_A.weight`]!.data,
          "f32",
          `${key} dA`,
        );
        assertClose(
          layer.lora_B.grad!,
          expected.grads_adapter![`${key}.lora_B.weight`]!.data,
          "f32",
          `${key} dB`,
        );
      }

      // save -> load round trip gives the same tensors and the same logits
      const out = mkdtempSync(join(tmpdir(), "lora-adapter-"));
      try {
        saveAdapter(model, out, readAdapterConfig(join(dir, "adapter"), defaults), dir);
        const again = setup(name).model;
        loadAdapter(again, out, defaults);
        assert.deepEqual(
          adapterTensors(again).map((t) => [t.name, Array.from(t.data as Float32Array)]),
          adapterTensors(model).map((t) => [t.name, Array.from(t.data as Float32Array)]),
        );
        assert.deepEqual(noGrad(() => again.forward(ids, shape)).data, logits.data);
      } finally {
        rmSync(out, { recursive: true, force: true });
      }

      mergeLoRA(model);
      // against PEFT's own merge where the fixture has it, else the unmerged logits
      assertClose(
        noGrad(() => model.forward(ids, shape)).data,
        (expected.logits_merged ?? expected.logits_adapter!).data,
        "f32",
        "merged",
      );
    });
  }
});

/** The PEFT adapter's logits, loss and LoRA gradients, one SGD step from it, and PEFT's merge. */
function adapterExactness(name: string) {
  const { dir, expected, ids, shape, targets, folder, model } = setup(name);
  const defaults = modelFamily(folder.config).defaultTargets;
  loadAdapter(model, join(dir, "adapter"), defaults);
  assertClose(
    noGrad(() => model.forward(ids, shape)).data,
    expected.logits_adapter!.data,
    "f32",
    `${name} adapter logits`,
  );
  const loss = languageModelLoss(model, ids, shape, targets);
  assertClose([loss.item()], [expected.loss_adapter!], "f32", `${name} adapter loss`);
  backward(loss);
  const layers = loraLayers(model).map(([path, layer]) => [`base_model.model.${path}`, layer] as const);
  for (const [key, layer] of layers) {
    assertClose(
      layer.lora_A.grad!,
      expected.grads_adapter![`${key}.lora_A.weight`]!.data,
      "f32",
      `${key} dA`,
    );
    assertClose(
      layer.lora_B.grad!,
      expected.grads_adapter![`${key}.lora_B.weight`]!.data,
      "f32",
      `${key} dB`,
    );
  }
  const { lr, loss_after, weights_after } = expected.sgd!;
  createOptimizer("sgd", model.trainableParameters(), { lr }).step();
  for (const [key, layer] of layers) {
    assertClose(layer.lora_A.data, weights_after[`${key}.lora_A.weight`]!.data, "f32", `${key} A after SGD`);
    assertClose(layer.lora_B.data, weights_after[`${key}.lora_B.weight`]!.data, "f32", `${key} B after SGD`);
  }
  const after = noGrad(() => languageModelLoss(model, ids, shape, targets)).item();
  assertClose([after], [loss_after], "f32", `${name} loss after one SGD step`);
  const again = setup(name).model;
  loadAdapter(again, join(dir, "adapter"), defaults);
  mergeLoRA(again);
  assertClose(noGrad(() => again.forward(ids, shape)).data, expected.logits_merged!.data, "f32", "merged");
}

const addon = nativeAddon();
const BACKENDS: [string, () => Backend, string | false][] = [
  ["ref", () => refBackend, false],
  ["wasm", () => wasmBackend, !wasmAvailable() && "WebAssembly SIMD does not validate here"],
  ["native", () => createNativeBackend(addon!), !addon && `native addon unavailable: ${nativeStatus()}`],
];

for (const [backendName, make, skip] of BACKENDS) {
  describe(`newer families with the ${backendName} backend`, { skip }, () => {
    let previous: Backend;
    before(() => {
      previous = backend();
      setBackend(make());
    });
    after(() => {
      setBackend(previous);
    });
    for (const name of FAMILIES) {
      it(`${name}: base logits and loss; adapter logits, loss, LoRA gradients, one SGD step, merge`, () => {
        const { expected, ids, shape, targets, model } = setup(name);
        const logits = noGrad(() => model.forward(ids, shape));
        assertClose(logits.data, expected.logits_base.data, "f32", `${name} logits`);
        const loss = noGrad(() => languageModelLoss(model, ids, shape, targets)).item();
        assertClose([loss], [expected.loss_base], "f32", `${name} loss`);
        adapterExactness(name);
      });
    }
  });
}

describe("newer families: the features matter, and both config spellings read alike", () => {
  /** The fixture's base logits with config.json edited (weights copied), or the load error. */
  const logitsWith = (name: string, edit: (c: Record<string, unknown>) => void) => {
    const dir = join(fixturesDir, "models", name);
    const tmp = mkdtempSync(join(tmpdir(), "lora-family-"));
    try {
      const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
      edit(config);
      writeFileSync(join(tmp, "config.json"), JSON.stringify(config));
      copyFileSync(join(dir, "model.safetensors"), join(tmp, "model.safetensors"));
      const { expected, ids, shape } = setup(name);
      return { logits: noGrad(() => loadModelFolder(tmp).model.forward(ids, shape)).data, expected };
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  };
  const differs = (got: Float32Array, want: number[]) =>
    got.some((g, i) => Math.abs(g - want[i]!) > 1e-3 + 1e-3 * Math.abs(want[i]!));

  const off: [string, string, (c: Record<string, unknown>) => void][] = [
    [
      "llama3_rope",
      "plain RoPE instead of llama3",
      (c) => ((c.rope_parameters as Record<string, unknown>).rope_type = "default"),
    ],
    [
      "llama_rope_linear",
      "no linear factor",
      (c) => ((c.rope_parameters as Record<string, unknown>).rope_type = "default"),
    ],
    [
      "llama_rope_dynamic",
      "no dynamic NTK",
      (c) => ((c.rope_parameters as Record<string, unknown>).rope_type = "default"),
    ],
    ["smollm3", "RoPE on the NoPE layer", (c) => (c.no_rope_layers = [1, 1])],
    ["mistral_window", "no sliding window", (c) => (c.sliding_window = null)],
    ["gemma3_text", "no sliding window", (c) => (c.sliding_window = 64)],
    [
      "gemma3_text",
      "the local theta on every layer",
      (c) => (c.layer_types = ["sliding_attention", "sliding_attention", "sliding_attention"]),
    ],
    ["gemma3_text", "another query_pre_attn_scalar", (c) => (c.query_pre_attn_scalar = 24)],
    ["gemma3_softcap", "no final logit soft cap", (c) => (c.final_logit_softcapping = null)],
    [
      "phi3",
      "the short LongRoPE factors",
      (c) => ((c.rope_parameters as Record<string, unknown>).original_max_position_embeddings = 32),
    ],
    [
      "phi3",
      "RoPE on the whole head",
      (c) => {
        const r = c.rope_parameters as Record<string, number[] | number>;
        r.partial_rotary_factor = 1;
        r.short_factor = [...(r.short_factor as number[]), 3, 3];
        r.long_factor = [...(r.long_factor as number[]), 9, 9];
      },
    ],
    ["phi3", "no sliding window", (c) => (c.sliding_window = null)],
  ];
  for (const [name, what, edit] of off) {
    it(`${name}: ${what} gives other logits (the fixture exercises the feature)`, () => {
      const { logits, expected } = logitsWith(name, edit);
      assert.ok(differs(logits, expected.logits_base.data));
    });
  }

  it("gemma3_text: attn_logit_softcapping changes nothing, as in transformers (its Gemma3Attention does not pass it on)", () => {
    // the fixture sets 5, which this model's raw scores pass (make_family_fixtures.py), and transformers'
    // logits are those of no cap at all
    for (const cap of [null, 0.5]) {
      const { logits, expected } = logitsWith("gemma3_softcap", (c) => (c.attn_logit_softcapping = cap));
      assertClose(logits, expected.logits_base.data, "f32", `attn_logit_softcapping ${cap}`);
    }
  });

  it("transformers 4's spelling (rope_scaling + rope_theta) gives the same logits as rope_parameters", () => {
    for (const name of ["llama3_rope", "llama_rope_dynamic"]) {
      const { logits, expected } = logitsWith(name, (c) => {
        const { rope_theta, ...scaling } = c.rope_parameters as Record<string, unknown>;
        delete c.rope_parameters;
        c.rope_theta = rope_theta;
        c.rope_scaling = { ...scaling, type: scaling.rope_type, rope_type: undefined };
      });
      assertClose(logits, expected.logits_base.data, "f32", name);
    }
    // Gemma 3 in transformers 4: rope_theta (+ rope_scaling) for full layers, rope_local_base_freq
    const gemma = logitsWith("gemma3_text", (c) => {
      const r = c.rope_parameters as Record<string, Record<string, unknown>>;
      delete c.rope_parameters;
      c.rope_theta = r.full_attention!.rope_theta;
      c.rope_scaling = { rope_type: "linear", factor: r.full_attention!.factor };
      c.rope_local_base_freq = r.sliding_attention!.rope_theta;
    });
    assertClose(gemma.logits, gemma.expected.logits_base.data, "f32", "gemma3_text");
  });

  it("refuses spellings that disagree, and rope types it does not compute, naming what is supported", () => {
    assert.throws(
      () => logitsWith("llama3_rope", (c) => (c.rope_theta = 500000)),
      /rope_parameters\.rope_theta is 10000 but the transformers-4 spelling .* says 500000; keep one/,
    );
    assert.throws(
      () =>
        logitsWith("llama3_rope", (c) => ((c.rope_parameters as Record<string, unknown>).rope_type = "yarn")),
      /rope_type "yarn" is not supported; supported: default, linear, dynamic, llama3/,
    );
    assert.throws(
      () => logitsWith("llama3_rope", (c) => delete (c.rope_parameters as Record<string, unknown>).factor),
      /rope llama3: factor must be a positive number/,
    );
  });
});
