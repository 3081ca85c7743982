/**
 * --init and --convert-to-lora in the fine-tuning job (no files): the settings' spelling, a PiSSA run
 * whose converted output is a plain rank-2r LoRA of the original base with the trained model's logits,
 * its checkpoints in PEFT's form, and an exact resume from one (the residual recomputed at load).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseCheckpoint } from "../../src/io/checkpoint.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { attachAdapter, parseAdapterConfig } from "../../src/io/peft.js";
import { parseSafetensors } from "../../src/io/safetensors.js";
import type { CausalLM } from "../../src/models/model.js";
import type { TokenizedRow } from "../../src/train/data.js";
import { type FineTuneInput, initNote, planFineTune, runFineTune } from "../../src/train/job.js";
import { MemoryRunStorage, type RunFiles } from "../../src/train/run-storage.js";
import { SettingsError, type SettingValues, settingsFrom } from "../../src/train/settings.js";
import { assertClose, fixturesDir } from "../helpers.js";

const MODEL = join(fixturesDir, "models/llama_gqa_tied");
const rows = (n: number): TokenizedRow[] =>
  Array.from({ length: n }, (_, i) => {
    const ids = Array.from({ length: 12 }, (_, t) => (5 * i + 3 * t) % 60);
    return { ids, mask: ids.map(() => 1) };
  });
const SETTINGS = { rank: "4", steps: "4", "save-every": "2", lr: "1e-2", "batch-size": "2" };

function input(values: SettingValues): FineTuneInput {
  const { model, config } = loadModelFolder(MODEL);
  return {
    settings: settingsFrom({ "base-dtype": "f32", ...SETTINGS, ...values }),
    model,
    config,
    train: rows(8),
    valid: null,
    padId: 0,
    baseModelName: "tiny",
  };
}
const text = (f: RunFiles, name: string) => f[name] as string;
const bytes = (f: RunFiles, name: string) => f[name] as Uint8Array;
const IDS = [1, 7, 22, 9, 40, 3, 15];
const logits = (m: CausalLM) => m.forward(Int32Array.from(IDS), [1, IDS.length]).data.slice();

/** The logits of a fresh (original) base model with the adapter in `files` attached. */
function loaded(files: RunFiles): { logits: Float32Array; r: number; init: unknown } {
  const { model } = loadModelFolder(MODEL);
  const config = parseAdapterConfig(JSON.parse(text(files, "adapter_config.json")), "cfg", []);
  attachAdapter(model, config, parseSafetensors(bytes(files, "adapter_model.safetensors"), "a").tensors, "a");
  return { logits: logits(model as CausalLM), r: config.r, init: config.init_lora_weights };
}

describe("--init", () => {
  it("takes PEFT's spellings, pissa_niter_N with a whole N, and names the choices otherwise", () => {
    for (const init of ["kaiming", "gaussian", "pissa", "pissa_niter_4", "pissa_niter_16", "olora"])
      assert.equal(settingsFrom({ init }).init, init);
    for (const init of ["pissa_niter_", "pissa_niter_x", "loftq", "pissa_niter_4x"])
      assert.throws(
        () => settingsFrom({ init }),
        (e: Error) =>
          e instanceof SettingsError && e.message.includes("pissa_niter_N") && e.message.includes(init),
      );
  });

  it("--convert-to-lora without a PiSSA / OLoRA init is refused, saying to drop it", () => {
    assert.throws(
      () => planFineTune(input({ "convert-to-lora": true })),
      (e: Error) => e instanceof SettingsError && /drop --convert-to-lora/.test(e.message),
    );
  });

  it("pissa + --convert-to-lora: outputs a rank-2r plain LoRA of the original base with the trained logits", async () => {
    const plan = planFineTune(input({ init: "pissa", "convert-to-lora": true }));
    const storage = new MemoryRunStorage();
    await runFineTune(plan, storage);
    const trained = logits(plan.trained as CausalLM);
    const out = loaded(storage.outputs!);
    assert.deepEqual([out.r, out.init], [8, true]);
    assertClose(out.logits, trained, "f32", "converted adapter on the original base");
    // the checkpoint keeps PEFT's pissa form: on the original base it recomputes the residual exactly
    const ckpt = loaded(storage.checkpoints.get(4)!);
    assert.deepEqual([ckpt.r, ckpt.init], [4, "pissa"]);
    assert.deepEqual(ckpt.logits, trained);
    assert.match(initNote(plan)!, /plain LoRA of the original base model \(rank 8/);
    const base = loadModelFolder(MODEL).model as CausalLM;
    assert.ok(
      Math.max(...trained.map((x, i) => Math.abs(x - logits(base)[i]!))) > 1e-3,
      "training did something",
    );
  });

  it("olora without conversion writes PEFT's form and a note that says how to load it", async () => {
    const plan = planFineTune(input({ init: "olora", steps: "2" }));
    const storage = new MemoryRunStorage();
    await runFineTune(plan, storage);
    const out = loaded(storage.outputs!);
    assert.equal(out.init, "olora");
    assert.deepEqual(out.logits, logits(plan.trained as CausalLM));
    assert.match(initNote(plan)!, /original base model only.*--convert-to-lora/);
  });

  it("a pissa_niter_2 run resumed from its step-2 checkpoint gives the bytes of the run never stopped", async () => {
    const values = { init: "pissa_niter_2", "convert-to-lora": true };
    const whole = new MemoryRunStorage();
    await runFineTune(planFineTune(input(values)), whole);
    const ckpt = whole.checkpoints.get(2)!;
    const state = parseCheckpoint(
      JSON.parse(text(ckpt, "trainer_state.json")),
      parseSafetensors(bytes(ckpt, "optimizer.safetensors"), "o"),
      "step-2",
    );
    const adapter = {
      config: parseAdapterConfig(JSON.parse(text(ckpt, "adapter_config.json")), "step-2", []),
      tensors: parseSafetensors(bytes(ckpt, "adapter_model.safetensors"), "step-2").tensors,
      source: "step-2",
    };
    const resumed = new MemoryRunStorage();
    await runFineTune(planFineTune({ ...input(values), adapter, resume: state }), resumed);
    assert.deepEqual(
      bytes(resumed.outputs!, "adapter_model.safetensors"),
      bytes(whole.outputs!, "adapter_model.safetensors"),
    );
  });
});
