/**
 * PEFT -> GGUF LoRA adapter -> PEFT (issue #14): the adapter read back (q/k rows un-permuted, llama.cpp's
 * alpha / r per tensor as PEFT's config) gives the loss the original gives, on the tiny Llama fixture
 * (with rank_pattern, alpha_pattern and rsLoRA adapters saved by PEFT) and on the real stories260K.
 * Also what the reader refuses, as llama.cpp refuses it.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { noGrad } from "../../src/autograd/index.js";
import { ggufAdapterFromPeft, readGGUFAdapter } from "../../src/io/gguf-adapter.js";
import { GGMLType } from "../../src/io/gguf-types.js";
import { gguf, serializeGGUF } from "../../src/io/gguf-write.js";
import { readAdapterConfig } from "../../src/io/node/adapter-folder.js";
import { readGGUFAdapterFile } from "../../src/io/node/gguf-adapter-file.js";
import { readJson } from "../../src/io/node/json-file.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { readSafetensorsFile } from "../../src/io/node/safetensors-file.js";
import { adapterTensors, attachAdapter } from "../../src/io/peft.js";
import {
  parseSafetensors,
  type SafetensorsTensor,
  serializeSafetensors,
  tensorToFloat32,
} from "../../src/io/safetensors.js";
import { applyLoRA, type LoraConfig } from "../../src/lora/index.js";
import type { CausalLM } from "../../src/models/index.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { languageModelLoss, nextTokenTargets } from "../../src/train/loss.js";
import { assertClose, fixtureModel, fixturesDir, SHARED_MISSING, sharedData } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-gguf-roundtrip-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function loss(model: CausalLM, ids: number[]): number {
  const x = Int32Array.from(ids);
  return noGrad(() => languageModelLoss(model, x, [1, x.length], nextTokenTargets(x, 1, x.length))).item();
}

/** Loss of the model folder `dir` with the adapter (`config`, `tensors`) attached. */
function lossWith(
  dir: string,
  config: LoraConfig,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
  ids: number[],
): number {
  const { model } = loadModelFolder(dir);
  attachAdapter(model, config, tensors, "adapter");
  model.eval();
  return loss(model, ids);
}

/** Exports, writes the file, reads it back through the Node reader. */
function roundTrip(
  config: LoraConfig,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
  modelConfig: Record<string, unknown>,
  name: string,
) {
  const file = join(tmp, `${name}.gguf`);
  writeFileSync(file, ggufAdapterFromPeft(config, tensors, modelConfig).bytes);
  return readGGUFAdapterFile(file, modelConfig);
}

describe("GGUF LoRA adapter round trip", () => {
  const model = fixtureModel("llama_gqa_tied");
  const modelConfig = readJson(join(model, "config.json"))!;
  const ids = Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % 71);

  for (const variant of ["plain", "patterns", "rslora"]) {
    it(`tiny Llama, ${variant} (PEFT-saved): the loss read back equals the original's`, () => {
      const dir = join(fixturesDir, "gguf-adapter", "llama_gqa_tied", variant);
      const config = readAdapterConfig(dir, []);
      const tensors = readSafetensorsFile(join(dir, "adapter_model.safetensors")).tensors;
      const back = roundTrip(config, tensors, modelConfig, variant);
      assert.equal(back.arch, "llama");
      assert.deepEqual([...back.tensors.keys()].sort(), [...tensors.keys()].sort());
      const base = loss(loadModelFolder(model).model, ids);
      const want = lossWith(model, config, tensors, ids);
      assert.ok(Math.abs(want - base) > 1e-3, `the adapter changes the loss (${base} -> ${want})`);
      assertClose([lossWith(model, back.config, back.tensors, ids)], [want], "f32", `${variant} loss`);
      // A comes back as it was, and B un-permuted (times the folded scale only where one was folded)
      for (const [key, t] of tensors)
        if (key.includes("lora_A") || variant === "plain")
          assert.deepEqual(tensorToFloat32(back.tensors.get(key)!), tensorToFloat32(t), key);
    });
  }

  it("the config read back: the most common rank as r, the others in rank_pattern, llama.cpp's alpha", () => {
    const dir = join(fixturesDir, "gguf-adapter", "llama_gqa_tied", "patterns");
    const config = readAdapterConfig(dir, []);
    const tensors = readSafetensorsFile(join(dir, "adapter_model.safetensors")).tensors;
    const back = roundTrip(config, tensors, modelConfig, "patterns-config").config;
    assert.equal(back.r, 4);
    assert.equal(back.lora_alpha, 8);
    assert.equal(back.use_rslora, false);
    assert.deepEqual(back.rank_pattern, {
      "model.layers.0.self_attn.k_proj": 2,
      "model.layers.0.mlp.down_proj": 6,
      "model.layers.1.self_attn.k_proj": 2,
      "model.layers.1.mlp.down_proj": 6,
    });
    assert.deepEqual(back.alpha_pattern, {});
    assert.deepEqual([...(back.target_modules as string[])].sort(), [
      "down_proj",
      "gate_proj",
      "k_proj",
      "o_proj",
      "q_proj",
      "up_proj",
      "v_proj",
    ]);
  });

  it("stories260K: q, k, v, o and MLP targets, the loss read back equals the original's", (t) => {
    const dir = sharedData("stories260K-hf");
    if (!dir) return t.skip(SHARED_MISSING);
    const cfg = readJson(join(dir, "config.json"))!;
    const config: LoraConfig = {
      r: 4,
      lora_alpha: 8,
      lora_dropout: 0,
      target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
      use_rslora: true,
      init_lora_weights: "gaussian",
    };
    const trained = loadModelFolder(dir).model;
    applyLoRA(trained, config, { rng: new Rng(5) });
    const rng = new Rng(6);
    for (const [name, p] of trained.trainableParameters())
      if (name.endsWith("lora_B")) p.data.set(Tensor.randn(p.shape, rng, 0.05).data);
    // as `lora train` saves it
    const tensors = parseSafetensors(serializeSafetensors(adapterTensors(trained)), "adapter").tensors;
    const golden = readJson(join(dir, "golden_greedy.json"))! as { losses: { ids: number[] }[] };
    const text = golden.losses[1]!.ids;
    trained.eval();
    const want = loss(trained, text);
    const back = roundTrip(config, tensors, cfg, "stories");
    assert.equal(back.alpha, Math.fround(8 * 2), "rsLoRA: alpha·√r");
    assertClose([lossWith(dir, back.config, back.tensors, text)], [want], "f32", "stories260K loss");
  });
});

describe("GGUF LoRA adapter reading refuses what llama.cpp refuses", () => {
  const modelConfig = readJson(join(fixtureModel("llama_gqa_tied"), "config.json"))!;
  const f32 = (n: number) => new Uint8Array(new Float32Array(n).buffer);
  const file = (
    meta: Array<[string, ReturnType<typeof gguf.string>]>,
    tensors: Parameters<typeof serializeGGUF>[1],
  ) => serializeGGUF(meta, tensors);
  const adapterMeta = (arch: string): Array<[string, ReturnType<typeof gguf.string>]> => [
    ["general.architecture", gguf.string(arch)],
    ["general.type", gguf.string("adapter")],
    ["adapter.type", gguf.string("lora")],
    ["adapter.lora.alpha", gguf.f32(8)],
  ];
  const pair = (name: string, inF: number, r: number, outF: number) => [
    { name: `${name}.lora_a`, type: GGMLType.F32, ne: [inF, r], data: f32(inF * r) },
    { name: `${name}.lora_b`, type: GGMLType.F32, ne: [r, outF], data: f32(r * outF) },
  ];

  it("a GGUF model, not an adapter: says to pass it as --model", () => {
    const bytes = file(
      [
        ["general.architecture", gguf.string("llama")],
        ["general.type", gguf.string("model")],
      ],
      [],
    );
    assert.throws(
      () => readGGUFAdapter(bytes, "M.gguf", modelConfig),
      /M\.gguf: .*general\.type is "model".*\n.*pass it as --model/s,
    );
  });

  it("lists the architecture mismatch, unknown tensors, missing halves and rank disagreements at once", () => {
    const tensors = [
      ...pair("blk.0.attn_q.weight", 32, 4, 32).slice(0, 1), // lora_b missing
      ...pair("blk.0.attn_frob.weight", 32, 4, 32),
      { name: "blk.0.attn_v.weight.lora_a", type: GGMLType.F32, ne: [32, 4], data: f32(128) },
      { name: "blk.0.attn_v.weight.lora_b", type: GGMLType.F32, ne: [2, 16], data: f32(32) },
      { name: "blk.0.attn_k.weight.extra", type: GGMLType.F32, ne: [4], data: f32(4) },
      { name: "blk.0.attn_norm.weight", type: GGMLType.F32, ne: [32], data: f32(32) }, // skipped, as llama.cpp
    ];
    assert.throws(
      () => readGGUFAdapter(file(adapterMeta("qwen2"), tensors), "A.gguf", modelConfig),
      /general\.architecture is "qwen2", but the model's is "llama"/,
    );
    assert.throws(
      () => readGGUFAdapter(file(adapterMeta("llama"), tensors), "A.gguf", modelConfig),
      (e: Error) => {
        assert.match(e.message, /^A\.gguf: cannot be read as a LoRA adapter for this model \(4 problems\)/);
        assert.match(e.message, /"blk\.0\.attn_k\.weight\.extra" has no \.lora_a\/\.lora_b suffix/);
        assert.match(e.message, /"blk\.0\.attn_q\.weight" has lora_a but no lora_b/);
        assert.match(
          e.message,
          /"blk\.0\.attn_frob\.weight" has no Hugging Face module in the llama architecture/,
        );
        assert.match(
          e.message,
          /"blk\.0\.attn_v\.weight": lora_a ne \[32, 4\] and lora_b ne \[2, 16\] disagree/,
        );
        return true;
      },
    );
  });
});
