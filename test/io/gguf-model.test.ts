/**
 * GGUF models in: tiny HF fixtures converted by the converter's rules (scripts/make_gguf_fixtures.py)
 * give transformers' logits on the weights gguf-py reads back; lossless conversions give the HF
 * folder's own weights and logits, and the folder's PEFT adapter applies unchanged (so the names and
 * the q/k un-permute map back); stories260K.gguf equals its HF folder.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { noGrad } from "../../src/autograd/index.js";
import { ggufModelConfig } from "../../src/io/gguf-model.js";
import { GGMLType, GGUFValueType } from "../../src/io/gguf-types.js";
import { loadAdapter } from "../../src/io/node/adapter-folder.js";
import { readGGUFHeader } from "../../src/io/node/gguf-file.js";
import { loadGGUFModelFile } from "../../src/io/node/gguf-model-file.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { loadTokenizer } from "../../src/io/node/tokenizer-file.js";
import { generate } from "../../src/models/generate.js";
import { modelFamily } from "../../src/models/index.js";
import { assertClose, fixtureModel, fixturesDir, SHARED_MISSING, sharedData } from "../helpers.js";
import { buildGGUF, f32Bytes } from "./gguf-builder.js";

const gguf = (name: string) => join(fixturesDir, "gguf/models", `${name}.gguf`);
const reference = (name: string) =>
  JSON.parse(readFileSync(join(fixturesDir, "gguf/models", `${name}.json`), "utf8"));
const tmp = mkdtempSync(join(tmpdir(), "gguf-model-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const CASES = [
  "llama_kquant",
  "llama3_rope.f32",
  "llama_untied.f32",
  "llama_untied.q8_0",
  "llama_untied.mixed",
  "llama_gqa_tied.f16",
  "qwen2.f32",
  "qwen2.q8_0",
  "qwen3.f32",
  "qwen3.q8_0",
  "gpt2.f32",
];

for (const name of CASES) {
  test(`${name}.gguf gives transformers' logits on the weights gguf-py reads back from it`, () => {
    const ref = reference(name);
    const { model } = loadModelFolder(gguf(name));
    const ids = Int32Array.from(ref.input_ids.flat());
    const logits = noGrad(() => model.forward(ids, [ref.input_ids.length, ref.input_ids[0].length]));
    assert.deepEqual(logits.shape, ref.logits.shape);
    assertClose(logits.data, ref.logits.data, "f32", `${name} logits`);
  });
}

test("the quantised fixtures hold the types they claim (Q8_0, F16 fallback, Q4_0/Q5_0/Q5_1 mixed)", () => {
  const types = (name: string) => new Set(Object.values(reference(name).types as Record<string, string>));
  assert.deepEqual([...types("llama_untied.q8_0")].sort(), ["F16", "F32", "Q8_0"]);
  assert.deepEqual([...types("llama_untied.mixed")].sort(), ["F16", "F32", "Q4_0", "Q5_0", "Q5_1", "Q8_0"]);
  assert.deepEqual([...types("llama_gqa_tied.f16")].sort(), ["F16", "F32"]);
  assert.deepEqual([...types("llama_kquant")].sort(), ["F32", "Q4_K", "Q5_K", "Q6_K"]);
});

for (const folder of ["llama_untied", "llama3_rope", "qwen2", "qwen3", "gpt2"]) {
  test(`${folder}.f32.gguf: the HF folder's weights exactly, its logits, and its PEFT adapter applies unchanged`, () => {
    const a = loadModelFolder(gguf(`${folder}.f32`));
    const b = loadModelFolder(fixtureModel(folder));
    const pb = new Map(b.model.namedParameters());
    // GPT-2's GGUF stores its tied head as output.weight: the HF folder's wte
    for (const [k, t] of a.model.namedParameters())
      assert.deepEqual(t.data, (pb.get(k) ?? pb.get("transformer.wte.weight")!).data, k);
    const expected = JSON.parse(readFileSync(join(fixtureModel(folder), "expected.json"), "utf8"));
    const ids = Int32Array.from(expected.input_ids.flat());
    const shape: [number, number] = [expected.input_ids.length, expected.input_ids[0].length];
    assertClose(
      noGrad(() => a.model.forward(ids, shape)).data,
      expected.logits_base.data,
      "f32",
      `${folder} base`,
    );
    loadAdapter(a.model, join(fixtureModel(folder), "adapter"), modelFamily(a.config).defaultTargets);
    assertClose(
      noGrad(() => a.model.forward(ids, shape)).data,
      expected.logits_adapter.data,
      "f32",
      `${folder} adapter`,
    );
  });
}

test("config.json from GGUF metadata: sizes, heads, rope, eps as the HF config says them", () => {
  const c = ggufModelConfig(readGGUFHeader(gguf("qwen3.f32")), "qwen3.gguf");
  const hf = JSON.parse(readFileSync(join(fixtureModel("qwen3"), "config.json"), "utf8"));
  for (const k of [
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "tie_word_embeddings",
    "attention_bias",
  ])
    assert.equal(c[k], hf[k], k);
  assert.equal(c.rope_theta, hf.rope_parameters.rope_theta);
  assert.equal(c.model_type, "qwen3");
  const tied = ggufModelConfig(readGGUFHeader(gguf("llama_gqa_tied.f16")), "t.gguf");
  assert.equal(tied.tie_word_embeddings, true);
  assert.equal(tied.num_key_value_heads, 2);
});

test("stories260K.gguf: the HF folder's weights, golden greedy ids and prompt logits", {
  skip: sharedData("stories260K") && sharedData("stories260K-hf") ? false : SHARED_MISSING,
}, () => {
  const hfDir = sharedData("stories260K-hf")!;
  const a = loadModelFolder(join(sharedData("stories260K")!, "stories260K.gguf"));
  const b = loadModelFolder(hfDir);
  const pb = new Map(b.model.namedParameters());
  for (const [k, t] of a.model.namedParameters()) {
    const hf = pb.get(k) ?? pb.get("model.embed_tokens.weight")!; // the HF folder ties lm_head
    assert.deepEqual(t.data, hf.data, k);
  }
  const golden = JSON.parse(readFileSync(join(hfDir, "golden_greedy.json"), "utf8"));
  const ids = loadTokenizer(hfDir).encode(golden.prompt);
  assert.deepEqual(
    [...generate(a.model, ids, { maxTokens: golden.greedy_steps, temperature: 0 })],
    golden.generated_ids,
  );
  const logits = noGrad(() => a.model.forward(Int32Array.from(ids), [1, ids.length]));
  assertClose(logits.data, golden.prompt_logits.flat(), "f32", "prompt logits");
});

test("a GGUF model that cannot be loaded lists every problem: architecture, types, names, adapters", () => {
  const write = (name: string, bytes: Uint8Array) => {
    const p = join(tmp, name);
    writeFileSync(p, bytes);
    return p;
  };
  const kv = (key: string, type: GGUFValueType, value: unknown) => ({ key, type, value });
  const arch = (a: string) => kv("general.architecture", GGUFValueType.STRING, a);
  const u32 = (k: string, v: number) => kv(k, GGUFValueType.UINT32, v);
  const llamaKvs = [
    arch("llama"),
    u32("llama.embedding_length", 32),
    u32("llama.block_count", 1),
    u32("llama.feed_forward_length", 32),
    u32("llama.attention.head_count", 2),
    kv("llama.attention.layer_norm_rms_epsilon", GGUFValueType.FLOAT32, 1e-5),
  ];
  const t = (name: string, dims: number[], type = GGMLType.F32, bytes = dims.reduce((a, b) => a * b, 4)) => ({
    name,
    dims,
    type,
    bytes,
  });
  const phi = write("phi.gguf", buildGGUF({ kvs: [arch("phi2")] }));
  assert.throws(
    () => loadGGUFModelFile(phi),
    /phi\.gguf: cannot load this GGUF model.*\n.*general\.architecture is "phi2"; supported: llama, qwen2, qwen3, gpt2/,
  );
  const adapter = write(
    "a.gguf",
    buildGGUF({ kvs: [arch("llama"), kv("general.type", GGUFValueType.STRING, "adapter")] }),
  );
  assert.throws(() => loadGGUFModelFile(adapter), /general\.type is "adapter".*\n.*pass it as --adapter/s);
  const bad = write(
    "bad.gguf",
    buildGGUF({
      kvs: llamaKvs,
      tensors: [
        t("token_embd.weight", [32, 8]),
        t("blk.0.attn_q.weight", [256], GGMLType.Q4_1, 144),
        t("blk.0.attn_k.weight", [256], GGMLType.Q2_K, 84),
        t("blk.0.mystery.weight", [4]),
        t("rope_freqs.weight", [8]),
      ],
    }),
  );
  assert.throws(
    () => loadGGUFModelFile(bad),
    (e: Error) => {
      assert.match(e.message, /bad\.gguf: cannot load this GGUF model/);
      assert.match(e.message, /tensor rope_freqs\.weight must hold 8 positive factors/);
      return true;
    },
  );
  const noRope = write(
    "types.gguf",
    buildGGUF({
      kvs: llamaKvs,
      tensors: [
        t("token_embd.weight", [32, 8]),
        t("blk.0.attn_q.weight", [256], GGMLType.Q4_1, 20 * 8),
        t("blk.0.attn_k.weight", [256], GGMLType.Q2_K, 84),
        t("blk.0.mystery.weight", [4]),
      ],
    }),
  );
  assert.throws(
    () => loadGGUFModelFile(noRope),
    (e: Error) => {
      assert.match(e.message, /\(3 problems\)/);
      assert.match(e.message, /blk\.0\.attn_q\.weight has type Q4_1, which cannot be loaded/);
      assert.match(e.message, /blk\.0\.attn_k\.weight has type Q2_K, which cannot be loaded/);
      assert.match(e.message, /blk\.0\.mystery\.weight has no Hugging Face name in the llama architecture/);
      assert.match(e.message, /Supported tensor types: F32, F16, BF16, Q8_0/);
      return true;
    },
  );
  const missing = write(
    "missing.gguf",
    buildGGUF({
      kvs: llamaKvs,
      tensors: [
        {
          name: "token_embd.weight",
          dims: [32, 8],
          type: GGMLType.F32,
          data: f32Bytes(new Array(256).fill(0.5)),
        },
      ],
    }),
  );
  assert.throws(
    () => loadGGUFModelFile(missing),
    /missing\.gguf: the weights do not fit config\.json.*\n.*missing tensor "model\.norm\.weight"/s,
  );
});

test("the memory the f32 weights need is checked before any tensor is dequantised", () => {
  // llama_untied: 21 tensors of ~21k f32 values in all; bf16 storage would fit, f32 dequantising not
  const path = gguf("llama_untied.q8_0");
  const f32 = readGGUFHeader(path).tensors.reduce((s, t) => s + t.elements * 4, 0);
  assert.throws(
    () => loadGGUFModelFile(path, { memoryLimit: f32 - 1, baseDtype: "bf16" }),
    /llama_untied\.q8_0\.gguf: dequantising this model to f32 needs .*, more than this machine's/,
  );
  assert.throws(() => loadGGUFModelFile(path, { memoryLimit: 1000 }), /more than this machine's/);
});
