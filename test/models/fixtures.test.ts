/**
 * Models and adapters against the independent PyTorch reference (scripts/make_fixtures.py):
 * logits, losses and LoRA gradients of tiny GPT-2, Llama (GQA, tied and untied, explicit head_dim,
 * rsLoRA), Qwen2 (q/k/v biases) and a BF16 checkpoint, all at f32 tolerance.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { backward, noGrad } from "../../src/autograd/index.js";
import { loadAdapter, readAdapterConfig, saveAdapter } from "../../src/io/node/adapter-folder.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { adapterTensors } from "../../src/io/peft.js";
import { loraLayers, mergeLoRA } from "../../src/lora/index.js";
import { modelFamily } from "../../src/models/index.js";
import { languageModelLoss, nextTokenTargets } from "../../src/train/loss.js";
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
  loss_adapter?: number;
  grads_adapter?: Record<string, Arr>;
}

const MODELS = ["gpt2", "gpt2_noprefix", "llama_gqa_tied", "llama_untied", "qwen2", "llama_bf16"];

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
      assert.deepEqual(folder.unused, [], "every checkpoint tensor is used or known to be ignorable");
      const logits = noGrad(() => model.forward(ids, shape));
      assert.deepEqual(logits.shape, expected.logits_base.shape);
      assertClose(logits.data, expected.logits_base.data, "f32", `${name} logits`);
      const loss = noGrad(() => languageModelLoss(model, ids, shape, targets)).item();
      assertClose([loss], [expected.loss_base], "f32", `${name} loss`);
    });
  }

  for (const name of ["gpt2", "llama_gqa_tied", "llama_untied", "qwen2"]) {
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
      assertClose(
        noGrad(() => model.forward(ids, shape)).data,
        expected.logits_adapter!.data,
        "f32",
        "merged",
      );
    });
  }
});
