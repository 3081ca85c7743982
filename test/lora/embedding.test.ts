/**
 * LoRA on embeddings, modules_to_save and trainable_token_indices against the real PEFT 0.21
 * (scripts/make_embedding_fixtures.py): PEFT's adapters load here and give PEFT's logits, loss and
 * gradients (tied heads included); what we write has PEFT's keys and loads back to the same logits;
 * an embedding update of zero gives the base bit for bit.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { backward, noGrad } from "../../src/autograd/index.js";
import { loadAdapter, readAdapterConfig, readAdapterInput } from "../../src/io/node/adapter-folder.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { adapterFiles, adapterModules, attachAdapter } from "../../src/io/peft.js";
import { LoRAEmbedding, loraEmbeddings } from "../../src/lora/embedding.js";
import { applyLoRA, fuseLoRA, mergeLoRA } from "../../src/lora/inject.js";
import { modelFamily } from "../../src/models/index.js";
import type { CausalLM } from "../../src/models/model.js";
import { Embedding } from "../../src/nn/layers.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { languageModelLoss, nextTokenTargets } from "../../src/train/loss.js";
import { assertClose, fixtureModel, fixturesDir } from "../helpers.js";

interface Arr {
  shape: number[];
  data: number[];
}
interface Expected {
  input_ids: number[][];
  logits: Arr;
  loss: number;
  grads: Record<string, Arr>;
  logits_disabled: Arr;
  init?: { lora_embedding_A_all_zero: boolean; lora_embedding_B_std: number; head_is_base_weight: boolean };
  head_follows_loaded_embedding?: boolean;
}

const CASES: [string, string][] = [
  ["llama_tied_embed", "llama_gqa_tied"],
  ["llama_tied_embed_base", "llama_gqa_tied"],
  ["gpt2_wte", "gpt2"],
  ["llama_modules_to_save", "llama_gqa_tied"],
  ["llama_trainable_tokens", "llama_gqa_tied"],
];

const caseDir = (name: string) => join(fixturesDir, "peft-embedding", name);

function setup(name: string, base: string) {
  const expected = JSON.parse(readFileSync(join(caseDir(name), "expected.json"), "utf8")) as Expected;
  const folder = loadModelFolder(fixtureModel(base));
  const B = expected.input_ids.length;
  const T = expected.input_ids[0]!.length;
  const ids = Int32Array.from(expected.input_ids.flat());
  return { expected, folder, model: folder.model as CausalLM, ids, shape: [B, T] as const };
}

/** A PEFT key -> our parameter path (a Linear's lora_A.weight is our field lora_A). */
const paramPath = (key: string) =>
  key.replace(/^base_model\.model\./, "").replace(/\.lora_(A|B)\.weight$/, ".lora_$1");

describe("PEFT adapters with embedding LoRA, modules_to_save, trainable tokens", () => {
  for (const [name, base] of CASES) {
    it(`${name}: PEFT's logits, loss and gradients`, () => {
      const { expected, folder, model, ids, shape } = setup(name, base);
      const defaults = modelFamily(folder.config).defaultTargets;
      loadAdapter(model, caseDir(name), defaults);
      const logits = noGrad(() => model.forward(ids, shape));
      assertClose(logits.data, expected.logits.data, "f32", `${name} logits`);
      const loss = languageModelLoss(model, ids, shape, nextTokenTargets(ids, shape[0], shape[1]));
      assertClose([loss.item()], [expected.loss], "f32", `${name} loss`);
      backward(loss);
      const params = new Map(model.trainableParameters());
      assert.deepEqual([...params.keys()].sort(), Object.keys(expected.grads).map(paramPath).sort());
      for (const [key, g] of Object.entries(expected.grads))
        assertClose(params.get(paramPath(key))!.grad!, g.data, "f32", `${name} d ${key}`);
    });
  }

  it("a saved embedding table replaces the embedding, and a tied head follows it (as in PEFT)", () => {
    const { expected, model } = setup("llama_tied_embed_base", "llama_gqa_tied");
    assert.equal(expected.head_follows_loaded_embedding, true);
    const input = readAdapterInput(caseDir("llama_tied_embed_base"));
    const table = input.tensors.get("base_model.model.model.embed_tokens.base_layer.weight")!;
    attachAdapter(model, input.config, input.tensors, input.source);
    const emb = loraEmbeddings(model)[0]![1];
    const want = new Float32Array(table.bytes.slice().buffer);
    assert.deepEqual(emb.base_layer.weight.data, want);
    assert.equal((model.lm_head as unknown as { weight: Tensor }).weight, emb.base_layer.weight);
  });

  it("the tied head keeps the base table: the embedding's update does not reach it (PEFT's default)", () => {
    const { model } = setup("llama_tied_embed", "llama_gqa_tied");
    assert.equal(setup("llama_tied_embed_base", "llama_gqa_tied").expected.init?.head_is_base_weight, true);
    const defaults = ["q_proj", "v_proj"];
    loadAdapter(model, caseDir("llama_tied_embed"), defaults);
    const emb = loraEmbeddings(model)[0]![1];
    assert.equal((model.lm_head as unknown as { weight: Tensor }).weight, emb.base_layer.weight);
  });
});

describe("LoRAEmbedding", () => {
  it("starts as PEFT's: A = 0 and B ~ N(0, 1), so the model equals the base bit for bit", () => {
    const { model, ids, shape } = setup("llama_tied_embed", "llama_gqa_tied");
    const { expected } = setup("llama_tied_embed_base", "llama_gqa_tied");
    assert.equal(expected.init?.lora_embedding_A_all_zero, true);
    const before = noGrad(() => model.forward(ids, shape)).data;
    applyLoRA(
      model,
      {
        r: 4,
        lora_alpha: 8,
        lora_dropout: 0,
        target_modules: ["embed_tokens"],
        use_rslora: false,
        init_lora_weights: true,
      },
      { rng: new Rng(3) },
    );
    const emb = loraEmbeddings(model)[0]![1];
    assert.ok(emb.lora_embedding_A.data.every((v) => v === 0));
    assert.deepEqual(noGrad(() => model.forward(ids, shape)).data, before);

    const big = LoRAEmbedding.fromBase(new Embedding(Tensor.zeros([500, 64])), {
      r: 8,
      alpha: 8,
      rng: new Rng(1),
    });
    const b = big.lora_embedding_B.data;
    const mean = b.reduce((s, v) => s + v, 0) / b.length;
    const std = Math.sqrt(b.reduce((s, v) => s + (v - mean) ** 2, 0) / b.length);
    assert.ok(
      Math.abs(std - 1) < 0.05,
      `B std ${std}, PEFT's normal_ gives 1 (its draw: ${expected.init?.lora_embedding_B_std})`,
    );
  });

  it("B = 0 with a nonzero A gives the base bit for bit", () => {
    const { model, ids, shape } = setup("gpt2_wte", "gpt2");
    const before = noGrad(() => model.forward(ids, shape)).data;
    applyLoRA(
      model,
      {
        r: 2,
        lora_alpha: 4,
        lora_dropout: 0,
        target_modules: ["wte"],
        use_rslora: false,
        init_lora_weights: true,
      },
      { rng: new Rng(5) },
    );
    const emb = loraEmbeddings(model)[0]![1];
    emb.lora_embedding_A.assign(Tensor.randn(emb.lora_embedding_A.shape, new Rng(9)).data);
    emb.lora_embedding_B.assign(new Float32Array(emb.lora_embedding_B.size));
    assert.deepEqual(noGrad(() => model.forward(ids, shape)).data, before);
  });
});

describe("writing PEFT's keys", () => {
  for (const [name, base] of CASES) {
    it(`${name}: the same keys as PEFT's file, and the same logits read back; merged logits agree`, () => {
      const { folder, model, ids, shape } = setup(name, base);
      const defaults = modelFamily(folder.config).defaultTargets;
      loadAdapter(model, caseDir(name), defaults);
      const logits = noGrad(() => model.forward(ids, shape)).data;
      const withTable = name === "llama_tied_embed_base";
      const config = readAdapterConfig(caseDir(name), defaults);
      const files = adapterFiles(model, config, fixtureModel(base), { saveEmbeddingLayers: withTable });
      const out = mkdtempSync(join(tmpdir(), "lora-embed-"));
      try {
        for (const [f, data] of Object.entries(files)) writeFileSync(join(out, f), data);
        const ours = [...readAdapterInput(out).tensors.keys()].sort();
        const peft = [...readAdapterInput(caseDir(name)).tensors.keys()].sort();
        assert.deepEqual(ours, peft);
        const again = setup(name, base).model;
        loadAdapter(again, out, defaults);
        assert.deepEqual(noGrad(() => again.forward(ids, shape)).data, logits);
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
      mergeLoRA(model);
      fuseLoRA(model);
      assertClose(noGrad(() => model.forward(ids, shape)).data, logits, "f32", `${name} merged`);
    });
  }
});

describe("reports without a model (lora inspect)", () => {
  it("an embedding's LoRA is a module of in V, out C; tensors stored whole are left out", () => {
    const gpt2 = readAdapterInput(caseDir("gpt2_wte"));
    const wte = adapterModules(gpt2.config, gpt2.tensors, gpt2.source).find(
      (m) => m.path === "transformer.wte",
    )!;
    assert.deepEqual([wte.r, wte.in, wte.out, wte.scale], [4, 67, 24, 4]);
    for (const name of ["llama_modules_to_save", "llama_trainable_tokens", "llama_tied_embed_base"]) {
      const a = readAdapterInput(caseDir(name));
      const paths = adapterModules(a.config, a.tensors, a.source).map((m) => m.path);
      assert.ok(
        paths.every((p) => /(q_proj|v_proj|embed_tokens)$/.test(p)),
        `${name}: ${paths}`,
      );
    }
  });
});

describe("bad adapters", () => {
  it("every problem of the extras is named at once", () => {
    const { model } = setup("llama_trainable_tokens", "llama_gqa_tied");
    const input = readAdapterInput(caseDir("llama_trainable_tokens"));
    const config = {
      ...input.config,
      trainable_token_indices: [3, 5, 999],
      modules_to_save: ["no_such_module"],
    };
    assert.throws(
      () => attachAdapter(model, config, input.tensors, input.source),
      (e: Error) =>
        /modules_to_save "no_such_module" matches no module/.test(e.message) &&
        /999 is not a token id in \[0, 71\)/.test(e.message) &&
        /trainable_tokens_delta" has shape \[3, 32\], expected \[3, 32\]/.test(e.message) === false,
    );
    const tied = readAdapterInput(caseDir("llama_tied_embed"));
    assert.throws(
      () =>
        attachAdapter(
          setup("llama_tied_embed", "llama_gqa_tied").model,
          { ...tied.config, ensure_weight_tying: true },
          tied.tensors,
          tied.source,
        ),
      /ensure_weight_tying: true on a model with a tied head .* is not supported/,
    );
  });

  it("a fresh config: an unknown module to save, a module trained two ways, a duplicated token id", () => {
    const fresh = (extra: object) => () =>
      applyLoRA(setup("llama_tied_embed", "llama_gqa_tied").model, {
        r: 2,
        lora_alpha: 4,
        lora_dropout: 0,
        target_modules: ["q_proj"],
        use_rslora: false,
        init_lora_weights: true,
        ...extra,
      });
    assert.throws(fresh({ modules_to_save: ["no_such"] }), /modules_to_save \["no_such"\] matched no module/);
    assert.throws(
      fresh({ modules_to_save: ["q_proj"] }),
      /"model.layers.0.self_attn.q_proj" is also adapted by LoRA/,
    );
    assert.throws(fresh({ trainable_token_indices: [3, 3] }), /3 appear more than once/);
    assert.throws(
      fresh({ target_modules: ["embed_tokens"], trainable_token_indices: [3] }),
      /model.embed_tokens is already adapted/,
    );
  });
});
