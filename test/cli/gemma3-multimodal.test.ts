/**
 * The text part of a multimodal Gemma 3 folder (Gemma3ForConditionalGeneration, made by transformers +
 * PEFT: scripts/make_family_fixtures.py) through the CLI: the vision tower reported in one line, targets
 * written as PEFT names them on the whole model, merge carrying the vision tower over unchanged.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { noGrad } from "../../src/autograd/index.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { readSafetensorsFile } from "../../src/io/node/safetensors-file.js";
import { type SerializableDType, serializeSafetensors } from "../../src/io/safetensors.js";
import { KVCache } from "../../src/nn/kv-cache.js";
import { assertClose, assertOk, fixtureModel, lora, writeJsonl } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-gemma3mm-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const base = fixtureModel("gemma3_multimodal");
const data = join(tmp, "data");
mkdirSync(data);
writeJsonl(
  join(data, "train.jsonl"),
  Array.from({ length: 8 }, (_, i) => ({
    input_ids: Array.from({ length: 16 }, (_, t) => (5 * i + 3 * t) % 68),
  })),
);
const towers = (name: string) => /^(vision_tower|multi_modal_projector)\./.test(name);
const tensorsOf = (dir: string) => readSafetensorsFile(join(dir, "model.safetensors")).tensors;

describe("a multimodal gemma3 folder: its text model through train, merge, eval and generation", () => {
  const run = join(tmp, "run");

  it("trains with --targets; the vision tower is one warning line; targets are PEFT's names on the whole model", () => {
    const r = lora(
      "train",
      "--model",
      base,
      "--data",
      data,
      "--out",
      run,
      "--steps",
      "2",
      "--targets",
      "q_proj,v_proj,down_proj",
    );
    assertOk(r);
    const lines = r.err.split("\n").filter((l) => l.includes("not used"));
    assert.equal(lines.length, 2, r.err); // the vision tower's line and the projector's
    assert.match(
      lines[0]!,
      /the vision tower's \d+ tensor\(s\) are not used: lora-ts trains and runs the text model only/,
    );
    // the regex PEFT was given for the fixture adapter, and the same tensor names as PEFT's adapter
    const ours = JSON.parse(readFileSync(join(run, "adapter_config.json"), "utf8"));
    const peft = JSON.parse(readFileSync(join(base, "adapter", "adapter_config.json"), "utf8"));
    assert.equal(ours.target_modules, peft.target_modules);
    assert.equal(ours.layers_to_transform, null);
    const names = (dir: string) =>
      [...readSafetensorsFile(join(dir, "adapter_model.safetensors")).tensors.keys()].sort();
    assert.deepEqual(names(run), names(join(base, "adapter")));
  });

  it("--layers puts the layer indexes into the regex (PEFT ignores layers_to_transform for a regex)", () => {
    const out = join(tmp, "run-layer1");
    assertOk(
      lora(
        "train",
        "--model",
        base,
        "--data",
        data,
        "--out",
        out,
        "--steps",
        "1",
        "--targets",
        "q_proj",
        "--layers",
        "1",
      ),
    );
    const c = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.equal(c.target_modules, "model\\.language_model\\.layers\\.(1)\\..*\\.(q_proj)");
    const names = [...readSafetensorsFile(join(out, "adapter_model.safetensors")).tensors.keys()];
    assert.deepEqual(names.sort(), [
      "base_model.model.model.language_model.layers.1.self_attn.q_proj.lora_A.weight",
      "base_model.model.model.language_model.layers.1.self_attn.q_proj.lora_B.weight",
    ]);
  });

  it("needs --targets (PEFT has no default for gemma3) and refuses --full", () => {
    const r = lora("train", "--model", base, "--data", data, "--out", join(tmp, "no-targets"));
    assert.equal(r.code, 2);
    assert.match(r.err, /PEFT has no default target_modules for model_type "gemma3"; pass --targets/);
    const f = lora(
      "train",
      "--model",
      base,
      "--data",
      data,
      "--out",
      join(tmp, "full"),
      "--full",
      "--steps",
      "1",
    );
    assert.equal(f.code, 2);
    assert.match(f.err, /--full trains and writes the text model only.*vision tower.*drop --full/);
  });

  it("refuses a PEFT adapter that adapts the vision tower too, saying why and what to use", () => {
    // made by PEFT with target_modules ["q_proj", "v_proj"] on the whole model
    const r = lora("eval", "--model", base, "--adapter", join(base, "adapter_with_vision"), "--data", data);
    assert.equal(r.code, 1, r.err);
    assert.match(
      r.err,
      /2 adapted module\(s\) lie outside the text model model\.language_model.*model\.vision_tower\.encoder\.layers\.0\.self_attn\.q_proj/,
    );
    assert.match(r.err, /use an adapter whose target_modules stay inside model\.language_model/);
  });

  it("merges into a whole folder: the vision tower and projector byte for byte, the text model merged", () => {
    const merged = join(tmp, "merged");
    const r = lora("merge", "--model", base, "--adapter", join(base, "adapter"), "--out", merged);
    assertOk(r);
    assert.match(
      r.out,
      /the vision tower and multimodal projector \(\d+ tensors\) are copied over unchanged/,
    );
    const [before, after] = [tensorsOf(base), tensorsOf(merged)];
    assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
    const tower = [...before.keys()].filter(towers);
    assert.ok(tower.length > 30);
    for (const name of tower) {
      assert.equal(after.get(name)!.dtype, before.get(name)!.dtype);
      assert.deepEqual(after.get(name)!.bytes, before.get(name)!.bytes, name);
    }
    // the merged text model gives PEFT's merge_and_unload logits
    const expected = JSON.parse(readFileSync(join(base, "expected.json"), "utf8"));
    const ids = Int32Array.from(expected.input_ids.flat());
    const shape = [expected.input_ids.length, expected.input_ids[0].length] as const;
    const { model } = loadModelFolder(merged);
    assertClose(noGrad(() => model.forward(ids, shape)).data, expected.logits_merged.data, "f32", "merged");
    // and lora eval of the merged folder equals the base with the adapter
    const loss = (...args: string[]) => {
      const e = lora("eval", ...args, "--data", data, "--json", "--base-dtype", "f32");
      assertOk(e);
      return JSON.parse(e.out).loss as number;
    };
    const [a, b] = [loss("--model", merged), loss("--model", base, "--adapter", join(base, "adapter"))];
    assert.ok(Math.abs(a - b) <= 1e-4 * b, `${a} vs ${b}`);
  });

  it("reads the checkpoint in the module-path layout too (model.language_model.*, model.vision_tower.*)", () => {
    const dir = join(tmp, "module-layout");
    mkdirSync(dir);
    copyFileSync(join(base, "config.json"), join(dir, "config.json"));
    const renamed = [...tensorsOf(base)].map(([name, t]) => ({
      name: name.startsWith("language_model.model.")
        ? `model.language_model.${name.slice("language_model.model.".length)}`
        : `model.${name}`,
      dtype: t.dtype as SerializableDType,
      shape: [...t.shape],
      data: t.bytes,
    }));
    writeFileSync(join(dir, "model.safetensors"), serializeSafetensors(renamed, { format: "pt" }));
    const expected = JSON.parse(readFileSync(join(base, "expected.json"), "utf8"));
    const ids = Int32Array.from(expected.input_ids.flat());
    const shape = [expected.input_ids.length, expected.input_ids[0].length] as const;
    const folder = loadModelFolder(dir);
    assert.ok(
      folder.unused.length > 30 &&
        folder.unused.every((n) => /^model\.(vision_tower|multi_modal_projector)\./.test(n)),
    );
    assertClose(
      noGrad(() => folder.model.forward(ids, shape)).data,
      expected.logits_base.data,
      "f32",
      "logits",
    );
  });

  it("generates with the KV cache as the full forward does", () => {
    const { model } = loadModelFolder(base);
    const V = model.vocabSize;
    const ids = [3, 14, 15, 9, 26];
    const cache = new KVCache();
    let logits = noGrad(() => model.forward(Int32Array.from(ids), [1, ids.length], cache)).data;
    for (let i = 0; i < 10; i++) {
      const row = logits.subarray(logits.length - V);
      const best = row.indexOf(Math.max(...row));
      ids.push(best);
      const full = noGrad(() => model.forward(Int32Array.from(ids), [1, ids.length])).data;
      logits = noGrad(() => model.forward(Int32Array.from([best]), [1, 1], cache)).data;
      assertClose(logits, full.subarray(full.length - V), "f32", `step ${i + 1}`);
    }
  });
});
