/** The HF <-> GGUF name table and the llama q/k row permutation, against gguf-py and the converter's formula. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { test } from "node:test";
import {
  type GGUFArch,
  ggufArchOfModelType,
  ggufModuleName,
  ggufTensorName,
  ggufTransposed,
  hfModuleName,
  hfTensorName,
  modelTypeOfGGUFArch,
  permutedHeads,
  permuteRows,
  unpermuteRows,
} from "../../src/io/gguf-names.js";
import { fixturesDir } from "../helpers.js";

interface NamesFixture {
  models: Record<string, { arch: GGUFArch; names: [string, string | null][] }>;
  permute: {
    rows: number;
    cols: number;
    n_head: number;
    n_head_kv: number | null;
    input: number[];
    output: number[];
  }[];
}
const fixture: NamesFixture = JSON.parse(readFileSync(resolve(fixturesDir, "gguf/names.json"), "utf8"));

test("every tensor of the fixture models gets the GGUF name gguf-py's TensorNameMap gives it, and back", () => {
  let checked = 0;
  for (const [folder, { arch, names }] of Object.entries(fixture.models)) {
    for (const [hf, gguf] of names) {
      assert.equal(ggufTensorName(arch, hf), gguf, `${folder}: ${hf}`);
      if (gguf === null) continue;
      // GGUF -> HF gives the canonical spelling (GPT-2 with "transformer."), which maps forward again
      const back = hfTensorName(arch, gguf);
      const canonical =
        arch === "gpt2" && !hf.startsWith("transformer.") && hf !== "lm_head.weight"
          ? `transformer.${hf}`
          : hf;
      assert.equal(back, canonical, `${folder}: ${gguf}`);
      checked++;
    }
  }
  assert.ok(checked > 140, `only ${checked} names checked`);
});

test("module names map both ways; unknown names, other endings and bad block indices give null", () => {
  assert.equal(ggufModuleName("llama", "model.layers.12.self_attn.q_proj"), "blk.12.attn_q");
  assert.equal(hfModuleName("llama", "blk.12.attn_q"), "model.layers.12.self_attn.q_proj");
  assert.equal(ggufModuleName("qwen3", "model.layers.0.self_attn.k_norm"), "blk.0.attn_k_norm");
  assert.equal(ggufModuleName("qwen2", "model.layers.0.self_attn.k_norm"), null);
  assert.equal(ggufModuleName("gpt2", "h.3.attn.c_attn"), "blk.3.attn_qkv");
  assert.equal(hfModuleName("gpt2", "blk.3.attn_qkv"), "transformer.h.3.attn.c_attn");
  assert.equal(ggufModuleName("llama", "model.layers.01.self_attn.q_proj"), null);
  assert.equal(ggufModuleName("llama", "model.layers.x.self_attn.q_proj"), null);
  assert.equal(ggufModuleName("llama", "model.layers.0.self_attn.rotary_emb"), null);
  assert.equal(ggufTensorName("llama", "model.layers.0.self_attn.q_proj.lora_A.weight"), null);
  assert.equal(ggufTensorName("llama", "model.layers.0.self_attn.q_proj"), null);
  assert.equal(hfTensorName("llama", "blk.0.attn_qkv.weight"), null);
  assert.equal(hfTensorName("llama", "constructor.weight"), null);
  assert.equal(hfTensorName("llama", "rope_freqs.weight"), null);
});

test("architectures: HF model_type -> GGUF architecture and back", () => {
  assert.equal(ggufArchOfModelType("llama"), "llama");
  assert.equal(ggufArchOfModelType("mistral"), "llama");
  assert.equal(ggufArchOfModelType("qwen2"), "qwen2");
  assert.equal(ggufArchOfModelType("qwen3"), "qwen3");
  assert.equal(ggufArchOfModelType("gpt2"), "gpt2");
  assert.equal(ggufArchOfModelType("phi3"), null);
  assert.equal(ggufArchOfModelType("toString"), null);
  for (const arch of ["llama", "qwen2", "qwen3", "gpt2"]) assert.equal(modelTypeOfGGUFArch(arch), arch);
  assert.equal(modelTypeOfGGUFArch("gemma3"), null);
});

test("which tensors the converter permutes (llama q/k, weight and bias) or transposes (GPT-2 Conv1D)", () => {
  const heads = { num_attention_heads: 4, num_key_value_heads: 2 };
  assert.equal(permutedHeads("llama", "model.layers.0.self_attn.q_proj.weight", heads), 4);
  assert.equal(permutedHeads("llama", "model.layers.0.self_attn.q_proj.bias", heads), 4);
  assert.equal(permutedHeads("llama", "model.layers.0.self_attn.k_proj.weight", heads), 2);
  assert.equal(permutedHeads("llama", "model.layers.0.self_attn.k_proj", heads), 2);
  assert.equal(
    permutedHeads("llama", "model.layers.0.self_attn.k_proj.weight", { num_attention_heads: 4 }),
    4,
  );
  assert.equal(permutedHeads("llama", "model.layers.0.self_attn.v_proj.weight", heads), null);
  assert.equal(permutedHeads("qwen2", "model.layers.0.self_attn.q_proj.weight", heads), null);
  assert.equal(permutedHeads("qwen3", "model.layers.0.self_attn.k_proj.weight", heads), null);
  assert.equal(ggufTransposed("gpt2", "transformer.h.0.attn.c_attn.weight"), true);
  assert.equal(ggufTransposed("gpt2", "h.0.mlp.c_proj.weight"), true);
  assert.equal(ggufTransposed("gpt2", "transformer.h.0.attn.c_attn.bias"), false);
  assert.equal(ggufTransposed("gpt2", "transformer.wte.weight"), false);
  assert.equal(ggufTransposed("llama", "model.layers.0.mlp.down_proj.weight"), false);
});

test("permuteRows equals the converter's reshape/swapaxes permute; unpermuteRows undoes it", () => {
  for (const p of fixture.permute) {
    const heads = p.n_head_kv ?? p.n_head;
    const got = permuteRows(Float32Array.from(p.input), p.rows, p.cols, heads);
    assert.deepEqual(Array.from(got), p.output, `${p.rows}x${p.cols}, ${heads} heads`);
    assert.deepEqual(Array.from(unpermuteRows(got, p.rows, p.cols, heads)), p.input);
  }
});

test("permuteRows on a hand example: one head of 4 rows, rows (0,1,2,3) -> (0,2,1,3)", () => {
  // [nHead=1, 2, half=2] -> [1, half, 2]: output row 2i+j is input row 2j+i
  const rows = Float32Array.from([10, 11, 20, 21, 30, 31, 40, 41]); // 4 rows of 2
  assert.deepEqual(Array.from(permuteRows(rows, 4, 2, 1)), [10, 11, 30, 31, 20, 21, 40, 41]);
  // two heads of 4 rows each permute independently
  const two = Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(Array.from(permuteRows(two, 8, 1, 2)), [0, 2, 1, 3, 4, 6, 5, 7]);
  assert.deepEqual(
    Array.from(unpermuteRows(Float32Array.from([0, 2, 1, 3, 4, 6, 5, 7]), 8, 1, 2)),
    [0, 1, 2, 3, 4, 5, 6, 7],
  );
  // head_dim 6: half 3, rows (0..5) -> (0,3,1,4,2,5)
  assert.deepEqual(
    Array.from(permuteRows(Float32Array.from([0, 1, 2, 3, 4, 5]), 6, 1, 1)),
    [0, 3, 1, 4, 2, 5],
  );
});

test("permuteRows refuses shapes that do not split into heads of an even size", () => {
  assert.throws(() => permuteRows(new Float32Array(12), 6, 2, 2), /6 rows do not split into 2 heads/);
  assert.throws(() => permuteRows(new Float32Array(10), 6, 2, 1), /10 values are not 6 rows of 2/);
  assert.throws(() => unpermuteRows(new Float32Array(8), 8, 1, 0), /8 rows do not split into 0 heads/);
});
