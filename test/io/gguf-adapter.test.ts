/**
 * PEFT adapter -> GGUF LoRA adapter (issue #14), checked against independent references in
 * test/fixtures/gguf-adapter (scripts/make_gguf_adapter_fixtures.py): adapters saved by the real PEFT,
 * what llama.cpp's own convert_lora_to_gguf.py wrote for them, and PEFT's get_delta_weight() per module,
 * permuted with the converter's own LlamaModel.permute. Our files are read back with @huggingface/gguf,
 * a reader written apart from ours.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { gguf as parseGguf } from "@huggingface/gguf";
import { parseGGUFHeader } from "../../src/io/gguf.js";
import { ggufAdapterFromModel, ggufAdapterFromPeft } from "../../src/io/gguf-adapter.js";
import { GGMLType } from "../../src/io/gguf-types.js";
import { readAdapterConfig } from "../../src/io/node/adapter-folder.js";
import { readJson } from "../../src/io/node/json-file.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { readSafetensorsFile } from "../../src/io/node/safetensors-file.js";
import { attachAdapter } from "../../src/io/peft.js";
import { tensorToFloat32 } from "../../src/io/safetensors.js";
import { decodeToFloat32 } from "../../src/tensor/dtype.js";
import { assertClose, fixtureModel, fixturesDir } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-gguf-adapter-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const FIX = join(fixturesDir, "gguf-adapter");
const adapterDir = (model: string, variant: string) => join(FIX, model, variant);

/** Our GGUF of a fixture adapter, written to a file. */
function exportFixture(model: string, variant: string, outtype: "f32" | "f16" | "bf16" = "f32") {
  const dir = adapterDir(model, variant);
  const modelConfig = readJson(join(fixtureModel(model), "config.json"))!;
  const config = readAdapterConfig(dir, []);
  const tensors = readSafetensorsFile(join(dir, "adapter_model.safetensors")).tensors;
  const result = ggufAdapterFromPeft(config, tensors, modelConfig, { outtype, source: dir });
  const file = join(tmp, `${model}-${variant}-${outtype}.gguf`);
  writeFileSync(file, result.bytes);
  return { file, result };
}

/** A GGUF file as @huggingface/gguf reads it, with each tensor's bytes. */
async function readWithHf(file: string) {
  const parsed = await parseGguf(file, { allowLocalFile: true, typedMetadata: true });
  const bytes = readFileSync(file);
  const tensors = new Map(
    parsed.tensorInfos.map((t) => {
      const ne = t.shape.map(Number);
      const size = ne.reduce((a, b) => a * b, 1) * ((t.dtype as number) === GGMLType.F32 ? 4 : 2);
      const at = Number(parsed.tensorDataOffset) + Number(t.offset);
      return [t.name, { ne, dtype: t.dtype as number, data: new Uint8Array(bytes.subarray(at, at + size)) }];
    }),
  );
  return { metadata: parsed.typedMetadata, tensors };
}

const DTYPE_OF: Record<number, "F32" | "F16" | "BF16"> = {
  [GGMLType.F32]: "F32",
  [GGMLType.F16]: "F16",
  [GGMLType.BF16]: "BF16",
};

/** llama.cpp's update for one module: (alpha / r) · B·A with r = lora_b's ne[0], as [out, in] row-major. */
function llamaCppDelta(a: { ne: number[]; dtype: number; data: Uint8Array }, b: typeof a, alpha: number) {
  const [inF, r] = a.ne as [number, number];
  const [rb, outF] = b.ne as [number, number];
  assert.equal(rb, r, "a.ne[1] == b.ne[0], as llama_adapter_lora_init checks");
  const A = decodeToFloat32(a.data, DTYPE_OF[a.dtype]!); // [r, in]
  const B = decodeToFloat32(b.data, DTYPE_OF[b.dtype]!); // [out, r]
  const scale = alpha / r;
  const d = new Float64Array(outF * inF);
  for (let o = 0; o < outF; o++)
    for (let k = 0; k < r; k++) {
      const bk = B[o * r + k]! * scale;
      for (let i = 0; i < inF; i++) d[o * inF + i]! += bk * A[k * inF + i]!;
    }
  return { d, shape: [outF, inF] };
}

describe("GGUF LoRA adapter export", () => {
  for (const [model, arch, outtype] of [
    ["llama_gqa_tied", "llama", "f32"],
    ["llama_gqa_tied", "llama", "f16"],
    ["llama_gqa_tied", "llama", "bf16"],
    ["qwen2", "qwen2", "f32"],
    ["qwen3", "qwen3", "f32"],
  ] as const) {
    it(`${model}: writes what llama.cpp's convert_lora_to_gguf.py writes (${outtype}: names, ne, types, bytes, alpha)`, async () => {
      const { file } = exportFixture(model, "plain", outtype);
      const ours = await readWithHf(file);
      const theirs = await readWithHf(join(adapterDir(model, "plain"), `converter-${outtype}.gguf`));
      assert.deepEqual([...ours.tensors.keys()].sort(), [...theirs.tensors.keys()].sort());
      assert.equal(ours.tensors.size, 2 * 7 * 2, "7 modules in 2 blocks, lora_a and lora_b each");
      for (const [name, t] of theirs.tensors) {
        const o = ours.tensors.get(name)!;
        assert.deepEqual(o.ne, t.ne, `${name} ne`);
        assert.equal(o.dtype, t.dtype, `${name} type`);
        assert.deepEqual(o.data, t.data, `${name}: the bytes differ from llama.cpp's converter`);
      }
      const m = ours.metadata;
      for (const key of [
        "general.architecture",
        "general.type",
        "adapter.type",
        "adapter.lora.alpha",
      ] as const)
        assert.deepEqual(m[key], theirs.metadata[key], key);
      assert.equal(m["general.architecture"]?.value, arch);
      assert.equal(m["general.type"]?.value, "adapter");
      assert.equal(m["adapter.type"]?.value, "lora");
      assert.equal(m["adapter.lora.alpha"]?.value, 8);
      assert.equal(m["general.alignment"]?.value, 32);
    });
  }

  it("lora_a has ne = [in, r] and lora_b ne = [r, out], as llama.cpp checks against the base tensors", async () => {
    const { file } = exportFixture("llama_gqa_tied", "plain");
    const { tensors } = await readWithHf(file);
    // llama_gqa_tied: hidden 32, 4 heads of 8, 2 KV heads (k/v out 16), MLP 48, r 4
    assert.deepEqual(tensors.get("blk.0.attn_q.weight.lora_a")?.ne, [32, 4]);
    assert.deepEqual(tensors.get("blk.0.attn_k.weight.lora_b")?.ne, [4, 16]);
    assert.deepEqual(tensors.get("blk.1.ffn_down.weight.lora_a")?.ne, [48, 4]);
    assert.deepEqual(tensors.get("blk.1.ffn_down.weight.lora_b")?.ne, [4, 32]);
  });

  // plain: the q/k permutation (none for qwen2); patterns: rank_pattern (k, down) and alpha_pattern (v, layer 1's q),
  // folded into B; rslora: alpha·√r; gpt2: Conv1D c_attn/c_proj/c_fc
  for (const [model, variant] of [
    ["llama_gqa_tied", "plain"],
    ["llama_gqa_tied", "patterns"],
    ["llama_gqa_tied", "rslora"],
    ["qwen2", "plain"],
    ["gpt2", "plain"],
  ] as const) {
    it(`${model} ${variant}: llama.cpp's (alpha / r)·B·A equals PEFT's update in GGUF's row order`, async () => {
      const { file } = exportFixture(model, variant);
      const { metadata, tensors } = await readWithHf(file);
      const alpha = metadata["adapter.lora.alpha"]!.value as number;
      const want = readSafetensorsFile(join(adapterDir(model, variant), "delta.safetensors")).tensors;
      assert.equal(tensors.size, 2 * want.size);
      for (const [name, w] of want) {
        const a = tensors.get(`${name}.lora_a`);
        const b = tensors.get(`${name}.lora_b`);
        assert.ok(a && b, `${name}: no lora_a/lora_b`);
        const { d, shape } = llamaCppDelta(a, b, alpha);
        assert.deepEqual(shape, w.shape, `${name} shape`);
        assertClose(d, tensorToFloat32(w), "f32", name);
      }
    });
  }

  it("reports rsLoRA and patterns as the alpha written and the modules folded", () => {
    const rs = exportFixture("llama_gqa_tied", "rslora").result;
    assert.equal(
      rs.alpha,
      Math.fround(8 * Math.sqrt(4)),
      "lora_alpha·√r, so that alpha / r = lora_alpha / √r",
    );
    assert.ok(rs.modules.every((m) => m.folded === 1));
    const p = exportFixture("llama_gqa_tied", "patterns").result;
    assert.equal(p.alpha, 8);
    const folded = p.modules.filter((m) => m.folded !== 1).map((m) => [m.path, m.folded]);
    // v_proj: alpha 32 over r 4 -> 4 times alpha 8; layer 1's q_proj: alpha 3 -> 3/8 of it
    assert.deepEqual(folded, [
      ["model.layers.0.self_attn.v_proj", 4],
      ["model.layers.1.self_attn.q_proj", 3 / 8],
      ["model.layers.1.self_attn.v_proj", 4],
    ]);
    // rank_pattern alone needs no fold: llama.cpp reads each tensor's rank
    const k = p.modules.find((m) => m.path === "model.layers.0.self_attn.k_proj")!;
    assert.equal(k.r, 2);
    assert.equal(k.folded, 1);
    assert.deepEqual(
      p.modules
        .filter((m) => m.permutedHeads !== null)
        .map((m) => [m.path.split(".").pop(), m.permutedHeads]),
      [
        ["k_proj", 2],
        ["q_proj", 4],
        ["k_proj", 2],
        ["q_proj", 4],
      ], // the adapter file's order; n_kv_head for k, n_head for q
    );
  });
});

describe("GGUF LoRA adapter export from a model's LoRA layers", () => {
  for (const variant of ["patterns", "rslora"]) {
    it(`${variant}: the same tensors and alpha as exporting the PEFT folder`, () => {
      const dir = adapterDir("llama_gqa_tied", variant);
      const { model, config: modelConfig } = loadModelFolder(fixtureModel("llama_gqa_tied"));
      const config = readAdapterConfig(dir, []);
      attachAdapter(model, config, readSafetensorsFile(join(dir, "adapter_model.safetensors")).tensors, dir);
      const fromModel = parseGGUFHeader(ggufAdapterFromModel(model, modelConfig).bytes, "from model");
      const { file } = exportFixture("llama_gqa_tied", variant);
      const folderBytes = new Uint8Array(readFileSync(file));
      const fromFolder = parseGGUFHeader(folderBytes, file);
      assert.deepEqual(fromModel.metadata, fromFolder.metadata);
      const data = (h: typeof fromModel, bytes: Uint8Array) =>
        new Map(h.tensors.map((t) => [t.name, [t.dims, bytes.subarray(t.offset, t.offset + t.bytes)]]));
      assert.deepEqual(
        data(fromModel, ggufAdapterFromModel(model, modelConfig).bytes),
        data(fromFolder, folderBytes),
      );
    });
  }
});

describe("GGUF LoRA adapter export refusals", () => {
  const dir = adapterDir("llama_gqa_tied", "plain");
  const config = readAdapterConfig(dir, []);
  const tensors = readSafetensorsFile(join(dir, "adapter_model.safetensors")).tensors;
  const modelConfig = readJson(join(fixtureModel("llama_gqa_tied"), "config.json"))!;
  const q = "base_model.model.model.layers.0.self_attn.q_proj";
  const A = tensors.get(`${q}.lora_A.weight`)!;
  const B = tensors.get(`${q}.lora_B.weight`)!;

  it("lists every module that has no GGUF tensor, every stray tensor and every missing half, at once", () => {
    const bad = new Map(tensors);
    bad.set("base_model.model.model.layers.0.mlp.act_fn.lora_A.weight", A);
    bad.set("base_model.model.model.layers.0.mlp.act_fn.lora_B.weight", B);
    bad.set("base_model.model.model.embed_tokens.lora_embedding_A", A);
    bad.set("base_model.model.lm_head.modules_to_save.weight", A);
    bad.delete("base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight");
    assert.throws(
      () => ggufAdapterFromPeft(config, bad, modelConfig, { source: "ADAPTER" }),
      (e: Error) => {
        assert.match(e.message, /^ADAPTER: cannot be written as a GGUF LoRA adapter \(4 problems\)/);
        assert.match(
          e.message,
          /"model\.layers\.0\.mlp\.act_fn" has no tensor in a GGUF model of architecture llama/,
        );
        assert.match(e.message, /lora_embedding_A": embedding LoRA is not exported/);
        assert.match(e.message, /lm_head\.modules_to_save\.weight" is not a LoRA A\/B weight/);
        assert.match(e.message, /"model\.layers\.1\.self_attn\.k_proj" has lora_A but no lora_B/);
        return true;
      },
    );
  });

  it("refuses the head of a tied model, and a model type with no GGUF architecture here", () => {
    const head = new Map([
      ["base_model.model.lm_head.lora_A.weight", A],
      ["base_model.model.lm_head.lora_B.weight", B],
    ]);
    assert.throws(
      () => ggufAdapterFromPeft(config, head, modelConfig),
      /output head, which shares the embedding/,
    );
    assert.throws(
      () =>
        ggufAdapterFromPeft(
          config,
          tensors,
          { ...modelConfig, model_type: "gemma3_text" },
          { modelSource: "CFG" },
        ),
      /^Error: CFG: model_type "gemma3_text" has no GGUF architecture here/,
    );
  });

  it("refuses q/k rows that do not split into the heads the permutation needs", () => {
    assert.throws(
      () => ggufAdapterFromPeft(config, tensors, { ...modelConfig, num_attention_heads: 3 }),
      /"model\.layers\.0\.self_attn\.q_proj": lora_B has 32 rows, which do not split into 3 heads/,
    );
  });
});
