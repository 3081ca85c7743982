/**
 * `--adapter` detection (PEFT folder, mlx-lm folder or weights file, GGUF file; the one stderr line
 * saying which), `lora export --format mlx` and `lora inspect`, run as a user runs them.
 */
import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { GGMLType, GGUFValueType } from "../../src/io/gguf-types.js";
import {
  assertClose,
  assertOk,
  fixtureModel,
  fixturesDir,
  lora,
  SHARED_MISSING,
  sharedData,
  writeJsonl,
} from "../helpers.js";
import { buildGGUF, f32Bytes } from "../io/gguf-builder.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-export-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const llama = fixtureModel("llama_untied");
const mlxRef = join(fixturesDir, "mlx", "llama_untied");
const expected = JSON.parse(readFileSync(join(mlxRef, "expected.json"), "utf8"));
const data = join(tmp, "ids.jsonl");
writeJsonl(
  data,
  expected.input_ids.map((ids: number[]) => ({ input_ids: ids })),
);
const evalLoss = (adapter: string) => {
  const r = lora(
    "eval",
    "--model",
    llama,
    "--adapter",
    adapter,
    "--data",
    data,
    "--json",
    "--base-dtype",
    "f32",
  );
  assertOk(r);
  return { loss: JSON.parse(r.out).loss as number, err: r.err };
};

describe("--adapter detection", () => {
  it("says which format it found, and reads each", () => {
    const peft = evalLoss(join(llama, "adapter"));
    assert.match(
      peft.err,
      /^adapter: PEFT folder .*llama_untied\/adapter \(adapter_model\.safetensors, r 2, lora_alpha 6, rsLoRA\)$/m,
    );
    const mlx = evalLoss(mlxRef);
    assert.match(
      mlx.err,
      /^adapter: mlx-lm folder .*mlx\/llama_untied \(adapters\.safetensors, rank 4, scale 20; /m,
    );
    assertClose([mlx.loss], [expected.loss], "f32", "mlx-lm adapter loss vs PyTorch");
    const ckpt = evalLoss(join(mlxRef, "0000100_adapters.safetensors"));
    assert.match(ckpt.err, /^adapter: mlx-lm folder .* \(0000100_adapters\.safetensors, /m);
    assertClose([ckpt.loss], [expected.loss_checkpoint], "f32", "numbered checkpoint loss");
  });

  it("a path that is no adapter lists what was expected; a model folder is named as one; a broken GGUF file is named with its problem", () => {
    const empty = join(tmp, "empty");
    mkdirSync(empty);
    const r = lora("eval", "--model", llama, "--adapter", empty, "--data", data);
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      /empty: not an adapter; expected a PEFT folder \(adapter_config\.json \+ adapter_model\.safetensors\), or an mlx-lm folder \(adapter_config\.json with lora_parameters \+ adapters\.safetensors.*\), or a GGUF LoRA file/,
    );
    const model = lora("eval", "--model", llama, "--adapter", llama, "--data", data);
    assert.match(model.err, /not an adapter \(it is a model folder: pass it as --model\)/);
    const gguf = join(tmp, "a.gguf");
    writeFileSync(gguf, Buffer.concat([Buffer.from("GGUF"), Buffer.alloc(20)]));
    const g = lora("eval", "--model", llama, "--adapter", gguf, "--data", data);
    assert.match(g.err, /a\.gguf: invalid GGUF file: unknown version 0/);
    const both = join(tmp, "both");
    cpSync(join(llama, "adapter"), both, { recursive: true });
    cpSync(join(mlxRef, "adapters.safetensors"), join(both, "adapters.safetensors"));
    assert.match(
      lora("eval", "--model", llama, "--adapter", both, "--data", data).err,
      /holds adapters of 2 formats/,
    );
  });
});

describe("lora train --adapter with an mlx-lm folder", () => {
  it("continues it from PyTorch's loss and writes a PEFT adapter of the same modules", () => {
    const out = join(tmp, "run-from-mlx");
    const r = lora(
      "train",
      "--model",
      llama,
      "--data",
      data,
      "--adapter",
      mlxRef,
      "--out",
      out,
      "--steps",
      "1",
      "--lr",
      "1e-9",
      "--optimizer",
      "sgd",
      "--batch-size",
      "2",
      // the reference is PyTorch's f32 loss ("auto" picks bf16 where its products are faster)
      "--base-dtype",
      "f32",
    );
    assertOk(r);
    assert.match(r.err, /^adapter: mlx-lm folder /m);
    const loss = Number(/final train loss (\S+)/.exec(r.out + r.err)![1]);
    assertClose([loss], [expected.loss], "f32", "loss of the first step");
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.deepEqual(
      [cfg.r, cfg.lora_alpha, cfg.use_rslora, cfg.target_modules, cfg.layers_to_transform],
      [4, 80, false, ["mlp.down_proj", "self_attn.q_proj", "self_attn.v_proj"], [1]],
    );
  });
});

describe("lora export --format mlx", () => {
  it("writes an mlx-lm folder that reads back with the same loss, and refuses to write where it reads", () => {
    const out = join(tmp, "out-mlx");
    const r = lora(
      "export",
      "--adapter",
      join(llama, "adapter"),
      "--format",
      "mlx",
      "--out",
      out,
      "--model",
      llama,
    );
    assertOk(r);
    assert.match(r.out, /^wrote .*out-mlx: an mlx-lm adapter folder .*14 LoRA layer\(s\)/);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.deepEqual(Object.keys(cfg), ["fine_tune_type", "lora_parameters", "model", "num_layers"]);
    const want = JSON.parse(readFileSync(join(llama, "expected.json"), "utf8")).loss_adapter;
    assertClose([evalLoss(out).loss], [want], "f32", "exported adapter loss");
    // the base model comes from base_model_name_or_path when it is a local folder (here, relative)
    const again = lora("export", "--adapter", join(llama, "adapter"), "--format", "mlx", "--out", out);
    assert.equal(again.code, 2);
    assert.match(again.err, /already holds adapters\.safetensors; pass --overwrite/);
    assert.match(
      lora("export", "--adapter", mlxRef, "--format", "mlx", "--out", mlxRef).err,
      /--out .* is the adapter folder; lora export never writes where it reads/,
    );
    assert.match(
      lora("export", "--adapter", mlxRef, "--format", "onnx", "--out", out).err,
      /--format must be one of gguf, mlx, got "onnx"/,
    );
    const elsewhere = join(tmp, "copy");
    cpSync(join(llama, "adapter"), elsewhere, { recursive: true });
    const cfgPath = join(elsewhere, "adapter_config.json");
    writeFileSync(
      cfgPath,
      JSON.stringify({
        ...JSON.parse(readFileSync(cfgPath, "utf8")),
        base_model_name_or_path: "org/remote-model",
      }),
    );
    assert.match(
      lora("export", "--adapter", elsewhere, "--format", "mlx", "--out", join(tmp, "x")).err,
      /the adapter names the base model "org\/remote-model", which is not a model folder here; pass --model DIR/,
    );
  });
});

describe("lora inspect", () => {
  it("an adapter: format, base model, per type r/alpha/scale, per module ‖ΔW‖_F and effective rank (numpy's)", () => {
    const r = lora("inspect", mlxRef);
    assertOk(r);
    assert.match(r.out, /^adapter: mlx-lm folder /);
    assert.match(r.out, /^base model: test\/fixtures\/models\/llama_untied$/m);
    assert.match(r.out, /^parameters: 768 in 3 module\(s\)$/m); // q, v: 4·(32+24) each; down: 4·(48+32)
    assert.match(r.out, /^self_attn\.q_proj\s+1\s+4\s+80\s+20\s+224$/m);
    const j = JSON.parse(lora("inspect", mlxRef, "--json").out);
    assert.equal(j.format, "mlx");
    assert.equal(j.effective_rank_tolerance, 1e-3);
    for (const m of j.modules) {
      const want = expected.deltas[m.path];
      assertClose([m.normF], [want.norm], "f32", `${m.path} ‖ΔW‖_F`);
      assertClose(m.singular, want.singular, "f32", `${m.path} σ`);
      assert.equal(m.effectiveRank, 4);
    }
  });

  it("a model folder: architecture, sizes, dtypes, memory and PEFT's default targets", () => {
    const r = lora("inspect", llama);
    assertOk(r);
    assert.match(r.out, /^model: .* \(llama, LlamaForCausalLM\)$/m);
    assert.match(
      r.out,
      /2 layers, hidden 32, 4 heads, 4 kv heads, head_dim 6, intermediate 48, vocab 89, context 64, untied head/,
    );
    assert.match(
      r.out,
      /PEFT default targets: \["q_proj","v_proj"\]: self_attn\.q_proj ×2, self_attn\.v_proj ×2/,
    );
    const j = JSON.parse(lora("inspect", fixtureModel("llama_bf16"), "--json").out);
    assert.deepEqual(Object.keys(j.dtypes), ["BF16"]);
    assert.equal(j.memory.f32, j.parameters * 4);
    assert.ok(j.memory.bf16 < j.memory.f32);
    assert.match(
      lora("inspect").err,
      /missing PATH \(an adapter or model folder, or a GGUF file\) for 'lora inspect'/,
    );
  });

  it("a GGUF file: type, architecture, sizes, tensors by ggml type, metadata (from the header alone)", () => {
    const path = join(tmp, "adapter.gguf");
    writeFileSync(
      path,
      buildGGUF({
        kvs: [
          { key: "general.architecture", type: GGUFValueType.STRING, value: "llama" },
          { key: "general.type", type: GGUFValueType.STRING, value: "adapter" },
          { key: "adapter.lora.alpha", type: GGUFValueType.FLOAT32, value: 16 },
          { key: "llama.block_count", type: GGUFValueType.UINT32, value: 2 },
          {
            key: "x.list",
            type: GGUFValueType.ARRAY,
            arrayType: GGUFValueType.INT32,
            value: [1, 2, 3, 4, 5, 6, 7, 8, 9],
          },
        ],
        tensors: [
          {
            name: "blk.0.attn_q.weight.lora_a",
            dims: [4, 2],
            type: GGMLType.F32,
            data: f32Bytes([1, 2, 3, 4, 5, 6, 7, 8]),
          },
          {
            name: "blk.0.attn_q.weight.lora_b",
            dims: [2, 4],
            type: GGMLType.F32,
            data: f32Bytes([0, 0, 0, 0, 0, 0, 0, 0]),
          },
          {
            name: "blk.1.attn_q.weight.lora_a",
            dims: [32, 2],
            type: GGMLType.Q8_0,
            data: new Uint8Array(68),
          },
        ],
      }),
    );
    const j = JSON.parse(lora("inspect", path, "--json").out);
    assert.equal(j.kind, "gguf");
    assert.equal(j.type, "adapter");
    assert.equal(j.architecture, "llama");
    assert.deepEqual(j.sizes, { block_count: 2 });
    assert.deepEqual(j.tensor_types, {
      F32: { tensors: 2, elements: 16, bytes: 64 },
      Q8_0: { tensors: 1, elements: 64, bytes: 68 },
    });
    assert.equal(j.metadata["adapter.lora.alpha"], 16);
    assert.equal(j.metadata["x.list"], "[9 × 1, 2, 3, ...]");
    assert.match(lora("inspect", path).out, /^GGUF v3 adapter: .*adapter\.gguf \(architecture llama\)$/m);
  });

  it("stories260K.gguf: the sizes its HF folder's config.json gives", (t) => {
    const gguf = sharedData("stories260K/stories260K.gguf");
    const hf = sharedData("stories260K-hf");
    if (!gguf || !hf) return t.skip(SHARED_MISSING);
    const g = JSON.parse(lora("inspect", gguf, "--json").out);
    const m = JSON.parse(lora("inspect", hf, "--json").out);
    assert.equal(g.architecture, "llama");
    assert.equal(m.model_type, "llama");
    assert.deepEqual(
      [
        g.sizes.block_count,
        g.sizes.embedding_length,
        g.sizes["attention.head_count"],
        g.sizes["attention.head_count_kv"],
        g.sizes.vocab_size,
        g.sizes.feed_forward_length,
      ],
      [m.layers, m.hidden, m.heads, m.kv_heads, m.vocab, m.intermediate],
    );
  });
});
