/**
 * `lora train` with LoRA on embed_tokens, --modules-to-save, --trainable-tokens and
 * --save-embedding-layers: the adapter holds PEFT's keys and config fields, only what is trained moves,
 * and `lora eval` reads it back.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { readSafetensorsFile } from "../../src/io/node/safetensors-file.js";
import { tensorToFloat32 } from "../../src/io/safetensors.js";
import { fixtureModel, lora, tokenRows, writeJsonl } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-train-embed-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const data = join(tmp, "data");
mkdirSync(data);
writeJsonl(join(data, "train.jsonl"), tokenRows(8));
writeJsonl(join(data, "valid.jsonl"), tokenRows(2, 50));

const base = fixtureModel("llama_gqa_tied");
const tensors = (file: string) =>
  new Map([...readSafetensorsFile(file).tensors].map(([k, t]) => [k, tensorToFloat32(t).slice()]));
const baseEmbedding = tensors(join(base, "model.safetensors")).get("model.embed_tokens.weight")!;
const train = (out: string, ...args: string[]) =>
  lora(
    "train",
    "--model",
    base,
    "--data",
    data,
    "--out",
    out,
    "--steps",
    "2",
    "--lr",
    "0.05",
    "--rank",
    "2",
    "--base-dtype",
    "f32", // the saved table is compared with the file's f32 values
    ...args,
  );
const P = "base_model.model.";

describe("lora train: embeddings, modules_to_save, trainable tokens", () => {
  it("LoRA on embed_tokens with a trained lm_head copy and the table saved on request", () => {
    const out = join(tmp, "embed");
    const r = train(
      out,
      "--targets",
      "embed_tokens,q_proj",
      "--modules-to-save",
      "lm_head",
      "--save-embedding-layers",
    );
    assert.equal(r.code, 0, r.err);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.deepEqual(cfg.target_modules, ["embed_tokens", "q_proj"]);
    assert.deepEqual(cfg.modules_to_save, ["lm_head"]);
    const t = tensors(join(out, "adapter_model.safetensors"));
    const keys = [...t.keys()].filter((k) => !k.includes(".layers."));
    assert.deepEqual(keys.sort(), [
      `${P}lm_head.weight`,
      `${P}model.embed_tokens.base_layer.weight`,
      `${P}model.embed_tokens.lora_embedding_A`,
      `${P}model.embed_tokens.lora_embedding_B`,
    ]);
    assert.deepEqual(t.get(`${P}model.embed_tokens.lora_embedding_A`)!.length, 2 * 71);
    assert.ok(
      t.get(`${P}model.embed_tokens.lora_embedding_A`)!.some((v) => v !== 0),
      "A left zero: not trained",
    );
    // the table is the base's (frozen); the head copy was trained away from it (the model is tied)
    assert.deepEqual(t.get(`${P}model.embed_tokens.base_layer.weight`), baseEmbedding);
    assert.notDeepEqual(t.get(`${P}lm_head.weight`), baseEmbedding);
    const e = lora("eval", "--model", base, "--adapter", out, "--data", join(data, "valid.jsonl"));
    assert.equal(e.code, 0, e.err);
  });

  it("trainable tokens: only the chosen rows are stored and trained; the norms are trained copies", () => {
    const out = join(tmp, "tokens");
    const r = train(out, "--trainable-tokens", "3,5-6", "--modules-to-save", "norm");
    assert.equal(r.code, 0, r.err);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.deepEqual(cfg.trainable_token_indices, [3, 5, 6]);
    const t = tensors(join(out, "adapter_model.safetensors"));
    const delta = t.get(`${P}model.embed_tokens.token_adapter.trainable_tokens_delta`)!;
    assert.equal(delta.length, 3 * 32);
    const rows = [3, 5, 6].map((id) => baseEmbedding.slice(id * 32, (id + 1) * 32));
    assert.notDeepEqual(delta, Float32Array.from(rows.flatMap((x) => [...x])));
    assert.ok(t.has(`${P}model.norm.weight`) && t.has(`${P}model.layers.0.input_layernorm.weight`));
  });

  it("refuses a token id outside the vocabulary, naming it", () => {
    const r = train(join(tmp, "bad"), "--trainable-tokens", "3,900");
    assert.notEqual(r.code, 0);
    assert.match(r.err, /900 is not a token id in \[0, 71\)/);
  });
});
