/**
 * PEFT DoRA adapters (use_dora: true) both ways, against the real PEFT: test/fixtures/dora/llama_untied
 * (scripts/make_dora_fixtures.py) is an adapter PEFT 0.21 saved for the llama_untied fixture model, with
 * PEFT's logits, loss, gradients of every lora_A, lora_B and lora_magnitude_vector, and its merged logits.
 * It loads, gives PEFT's numbers, trains, and is written back under PEFT's keys; bad files are refused.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { backward, noGrad } from "../../src/autograd/index.js";
import { loadAdapter, readAdapterConfig, saveAdapter } from "../../src/io/node/adapter-folder.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { readSafetensorsFile } from "../../src/io/node/safetensors-file.js";
import { adapterTensors, addAdapter } from "../../src/io/peft.js";
import { serializeSafetensors, tensorToFloat32 } from "../../src/io/safetensors.js";
import { AdapterSet, DoRALinear, loraLayers, mergeLoRA } from "../../src/lora/index.js";
import { modelFamily } from "../../src/models/index.js";
import { languageModelLoss, nextTokenTargets } from "../../src/train/loss.js";
import { createOptimizer } from "../../src/train/optim.js";
import { assertClose, fixturesDir } from "../helpers.js";

interface T {
  shape: number[];
  data: number[];
}
const dir = join(fixturesDir, "dora", "llama_untied");
const adapterDir = join(dir, "adapter");
const expected = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8")) as {
  input_ids: number[][];
  logits_adapter: T;
  loss_adapter: number;
  grads_adapter: Record<string, T>;
  logits_merged: T;
};
const B = expected.input_ids.length;
const Tn = expected.input_ids[0]!.length;
const ids = Int32Array.from(expected.input_ids.flat());
const shape = [B, Tn] as const;
const targets = nextTokenTargets(ids, B, Tn);
const baseModel = () => {
  const folder = loadModelFolder(join(fixturesDir, "models", "llama_untied"));
  return { model: folder.model, defaults: modelFamily(folder.config).defaultTargets };
};
const tmp = mkdtempSync(join(tmpdir(), "lora-dora-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("PEFT DoRA adapter on llama_untied (q_proj, v_proj, down_proj; r 2, rsLoRA)", () => {
  it("loads as DoRA layers and gives PEFT's logits, loss and gradients of A, B and the magnitude", () => {
    const { model, defaults } = baseModel();
    const { config, paths } = loadAdapter(model, adapterDir, defaults);
    assert.equal(config.use_dora, true);
    assert.equal(paths.length, 6);
    assert.ok(loraLayers(model).every(([, l]) => l instanceof DoRALinear));
    assert.equal(paths.length * 3, Object.keys(expected.grads_adapter).length);
    const logits = noGrad(() => model.forward(ids, shape));
    assertClose(logits.data, expected.logits_adapter.data, "f32", "logits");
    const loss = languageModelLoss(model, ids, shape, targets);
    assertClose([loss.item()], [expected.loss_adapter], "f32", "loss");
    backward(loss);
    for (const [path, l] of loraLayers(model)) {
      const key = `base_model.model.${path}`;
      const d = l as DoRALinear;
      assertClose(d.lora_A.grad!, expected.grads_adapter[`${key}.lora_A.weight`]!.data, "f32", `${key} dA`);
      assertClose(d.lora_B.grad!, expected.grads_adapter[`${key}.lora_B.weight`]!.data, "f32", `${key} dB`);
      assertClose(
        d.lora_magnitude_vector.grad!,
        expected.grads_adapter[`${key}.lora_magnitude_vector`]!.data,
        "f32",
        `${key} dm`,
      );
    }
  });

  it("merges into PEFT's merge_and_unload logits", () => {
    const { model, defaults } = baseModel();
    loadAdapter(model, adapterDir, defaults);
    mergeLoRA(model);
    assertClose(noGrad(() => model.forward(ids, shape)).data, expected.logits_merged.data, "f32", "merged");
  });

  it("trains (A, B and magnitudes move, the loss falls) and saves under PEFT's keys; the saved adapter loads back", () => {
    const { model, defaults } = baseModel();
    loadAdapter(model, adapterDir, defaults);
    const trainable = model.trainableParameters().map(([n]) => n);
    assert.equal(trainable.filter((n) => n.endsWith(".lora_magnitude_vector")).length, 6);
    const opt = createOptimizer("adamw", model.trainableParameters(), { lr: 1e-2, weightDecay: 0 });
    const before = noGrad(() => languageModelLoss(model, ids, shape, targets)).item();
    const m0 = (loraLayers(model)[0]![1] as DoRALinear).lora_magnitude_vector.data.slice();
    for (let i = 0; i < 5; i++) {
      opt.zeroGrad();
      backward(languageModelLoss(model, ids, shape, targets));
      opt.step();
    }
    const trained = noGrad(() => languageModelLoss(model, ids, shape, targets)).item();
    assert.ok(trained < before, `loss ${before} -> ${trained}`);
    assert.notDeepEqual((loraLayers(model)[0]![1] as DoRALinear).lora_magnitude_vector.data, m0);

    const out = join(tmp, "saved");
    saveAdapter(model, out, readAdapterConfig(adapterDir, defaults), "test/fixtures/models/llama_untied");
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.equal(cfg.use_dora, true);
    const keys = (d: string) =>
      [...readSafetensorsFile(join(d, "adapter_model.safetensors")).tensors.keys()].sort();
    assert.deepEqual(keys(out), keys(adapterDir), "the same keys as PEFT's own file");
    const file = readSafetensorsFile(join(out, "adapter_model.safetensors"));
    const mag = file.tensors.get("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector")!;
    assert.deepEqual([mag.shape, mag.dtype], [[24], "F32"]);
    const again = baseModel().model;
    loadAdapter(again, out, defaults);
    assert.deepEqual(
      adapterTensors(again).map((t) => [t.name, Array.from(t.data as Float32Array)]),
      adapterTensors(model).map((t) => [t.name, Array.from(t.data as Float32Array)]),
    );
    assert.equal(noGrad(() => languageModelLoss(again, ids, shape, targets)).item(), trained);
  });
});

describe("PEFT DoRA adapters: bad input", () => {
  /** A copy of the fixture adapter with its config and tensors edited. */
  function variant(
    name: string,
    editConfig: (c: Record<string, unknown>) => void,
    editTensors: (t: Map<string, Float32Array>) => void = () => {},
  ): string {
    const d = join(tmp, name);
    rmSync(d, { recursive: true, force: true });
    const cfg = JSON.parse(readFileSync(join(adapterDir, "adapter_config.json"), "utf8"));
    editConfig(cfg);
    const src = readSafetensorsFile(join(adapterDir, "adapter_model.safetensors")).tensors;
    const t = new Map([...src].map(([k, e]) => [k, tensorToFloat32(e).slice()]));
    editTensors(t);
    const shapes = new Map([...src].map(([k, e]) => [k, e.shape]));
    const fits = (sh: readonly number[] | undefined, n: number) =>
      sh && sh.reduce((a, b) => a * b, 1) === n ? [...sh] : undefined;
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, "adapter_config.json"), JSON.stringify(cfg));
    writeFileSync(
      join(d, "adapter_model.safetensors"),
      serializeSafetensors(
        [...t].map(([k, v]) => ({
          name: k,
          dtype: "F32" as const,
          shape: fits(shapes.get(k), v.length) ?? [v.length],
          data: v,
        })),
      ),
    );
    return d;
  }
  const q = "base_model.model.model.layers.0.self_attn.q_proj";
  const load = (d: string) => {
    const { model, defaults } = baseModel();
    return () => loadAdapter(model, d, defaults);
  };

  it("magnitudes with use_dora false: refused, naming the key and the fix", () => {
    const d = variant("no-flag", (c) => {
      c.use_dora = false;
    });
    assert.throws(
      load(d),
      /layers\.0\.self_attn\.q_proj\.lora_magnitude_vector" is a DoRA magnitude, but adapter_config\.json has use_dora false; set "use_dora": true/,
    );
  });

  it("use_dora without a layer's magnitude, one of the wrong shape, a NaN: every problem in one error", () => {
    const d = variant(
      "bad-mag",
      () => {},
      (t) => {
        t.delete(`${q}.lora_magnitude_vector`);
        t.set("base_model.model.model.layers.0.self_attn.v_proj.lora_magnitude_vector", new Float32Array(3));
        t.get("base_model.model.model.layers.1.mlp.down_proj.lora_magnitude_vector")![2] = Number.NaN;
      },
    );
    assert.throws(load(d), (e: Error) => {
      assert.match(
        e.message,
        /q_proj" has no lora_magnitude_vector, which a DoRA adapter \(use_dora: true\) needs/,
      );
      assert.match(e.message, /v_proj\.lora_magnitude_vector" has shape \[3\], expected \[24\]/);
      assert.match(e.message, /down_proj\.lora_magnitude_vector" .*NaN/);
      return true;
    });
  });

  it("a DoRA adapter is refused by named adapters (AdapterSet), naming the adapter", () => {
    const { model } = baseModel();
    const set = new AdapterSet(model);
    const cfg = readAdapterConfig(adapterDir, []);
    const tensors = readSafetensorsFile(join(adapterDir, "adapter_model.safetensors")).tensors;
    assert.throws(
      () => addAdapter(set, "style", { config: cfg, tensors, source: adapterDir }),
      /adapter "style" is a DoRA adapter \(use_dora: true\); named adapters on one base run LoRA only/,
    );
  });
});
