/** The fine-tuning job without any file: memory storage, events, exact resume from a stored checkpoint, refusals. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseCheckpoint } from "../../src/io/checkpoint.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { parseAdapterConfig } from "../../src/io/peft.js";
import { parseSafetensors } from "../../src/io/safetensors.js";
import { modelFamily } from "../../src/models/index.js";
import type { TokenizedRow } from "../../src/train/data.js";
import { type FineTuneEvent, type FineTuneInput, planFineTune, runFineTune } from "../../src/train/job.js";
import { MemoryRunStorage, type RunFiles } from "../../src/train/run-storage.js";
import { SettingsError, type SettingValues, settingsFrom } from "../../src/train/settings.js";
import { fixturesDir } from "../helpers.js";

const MODEL = join(fixturesDir, "models/llama_gqa_tied");
const rows = (n: number, at: number): TokenizedRow[] =>
  Array.from({ length: n }, (_, i) => {
    const ids = Array.from({ length: 12 + (i % 3) }, (_, t) => (5 * (at + i) + 3 * t) % 60);
    return { ids, mask: ids.map(() => 1) };
  });

function input(values: SettingValues, extra: Partial<FineTuneInput> = {}): FineTuneInput {
  const { model, config } = loadModelFolder(MODEL);
  return {
    settings: settingsFrom({ "base-dtype": "f32", ...values }),
    model,
    config,
    train: rows(12, 0),
    valid: rows(4, 100),
    padId: 0,
    baseModelName: "tiny",
    ...extra,
  };
}

const text = (f: RunFiles, name: string) => f[name] as string;
const bytes = (f: RunFiles, name: string) => f[name] as Uint8Array;
const SETTINGS = {
  rank: "4",
  steps: "6",
  "save-every": "3",
  "eval-every": "3",
  lr: "1e-2",
  "batch-size": "2",
};

describe("fine-tuning job", () => {
  it("trains into memory: a metrics row per step and evaluation, checkpoints, the adapter, and events", async () => {
    const plan = planFineTune(input(SETTINGS));
    assert.equal(plan.steps, 6);
    const storage = new MemoryRunStorage();
    const events: FineTuneEvent["type"][] = [];
    const result = await runFineTune(plan, storage, (e) => events.push(e.type));
    assert.equal(result!.steps, 6);
    assert.deepEqual(
      storage.metrics.map((m) => ("val_loss" in m ? `v${m.step}` : `s${m.step}`)),
      ["v0", "s1", "s2", "s3", "v3", "s4", "s5", "s6", "v6"],
    );
    assert.deepEqual([...storage.checkpoints.keys()], [3, 6]);
    assert.deepEqual(Object.keys(storage.outputs!).sort(), [
      "adapter_config.json",
      "adapter_model.safetensors",
    ]);
    assert.equal(events.filter((e) => e === "step").length, 6);
    assert.equal(events.filter((e) => e === "checkpoint").length, 2);
    assert.ok(events.includes("eval-row"));
    const val = storage.metrics.filter((m) => "val_loss" in m).map((m) => m.val_loss as number);
    assert.ok(val.at(-1)! < val[0]!, `validation loss ${val[0]} -> ${val.at(-1)}`);
  });

  it("resumed from its step-3 checkpoint, gives the bytes of the run that was never stopped", async () => {
    const whole = new MemoryRunStorage();
    await runFineTune(planFineTune(input(SETTINGS)), whole);
    const ckpt = whole.checkpoints.get(3)!;
    const state = parseCheckpoint(
      JSON.parse(text(ckpt, "trainer_state.json")),
      parseSafetensors(bytes(ckpt, "optimizer.safetensors"), "optimizer.safetensors"),
      "step-3",
    );
    const fresh = input(SETTINGS);
    const defaults = modelFamily(fresh.config).defaultTargets;
    const adapter = {
      config: parseAdapterConfig(JSON.parse(text(ckpt, "adapter_config.json")), "step-3", defaults),
      tensors: parseSafetensors(bytes(ckpt, "adapter_model.safetensors"), "step-3").tensors,
      source: "step-3",
    };
    const resumed = new MemoryRunStorage();
    await runFineTune(planFineTune({ ...fresh, adapter, resume: state }), resumed);
    const untimed = (m: Record<string, unknown>[]) => m.map(({ elapsed_s, ...rest }) => rest);
    const after3 = whole.metrics.slice(whole.metrics.findIndex((m) => m.step === 4));
    assert.deepEqual(untimed(resumed.metrics), untimed(after3));
    assert.deepEqual(
      bytes(resumed.outputs!, "adapter_model.safetensors"),
      bytes(whole.outputs!, "adapter_model.safetensors"),
    );
  });

  it("stopped by shouldStop between save-every steps, checkpoints that step and no outputs; the resume gives the uninterrupted bytes", async () => {
    const whole = new MemoryRunStorage();
    await runFineTune(planFineTune(input(SETTINGS)), whole);
    // asked after every step: stop after the 4th (save-every is 3, so 4 has no checkpoint of its own)
    const stopped = new MemoryRunStorage();
    let asked = 0;
    const result = await runFineTune(planFineTune(input(SETTINGS)), stopped, () => {}, {
      shouldStop: () => ++asked === 4,
    });
    assert.equal(result!.steps, 4);
    assert.equal(result!.stopped, true);
    assert.deepEqual([...stopped.checkpoints.keys()], [3, 4]);
    assert.equal(stopped.outputs, null);
    const ckpt = stopped.checkpoints.get(4)!;
    const state = parseCheckpoint(
      JSON.parse(text(ckpt, "trainer_state.json")),
      parseSafetensors(bytes(ckpt, "optimizer.safetensors"), "optimizer.safetensors"),
      "step-4",
    );
    assert.equal(state.step, 4);
    const fresh = input(SETTINGS);
    const adapter = {
      config: parseAdapterConfig(
        JSON.parse(text(ckpt, "adapter_config.json")),
        "step-4",
        modelFamily(fresh.config).defaultTargets,
      ),
      tensors: parseSafetensors(bytes(ckpt, "adapter_model.safetensors"), "step-4").tensors,
      source: "step-4",
    };
    const resumed = new MemoryRunStorage();
    await runFineTune(planFineTune({ ...fresh, adapter, resume: state }), resumed);
    assert.deepEqual(
      bytes(resumed.outputs!, "adapter_model.safetensors"),
      bytes(whole.outputs!, "adapter_model.safetensors"),
    );
  });

  it("a run already at its last step only writes its outputs", async () => {
    const whole = new MemoryRunStorage();
    await runFineTune(planFineTune(input(SETTINGS)), whole);
    const ckpt = whole.checkpoints.get(6)!;
    const state = parseCheckpoint(
      JSON.parse(text(ckpt, "trainer_state.json")),
      parseSafetensors(bytes(ckpt, "optimizer.safetensors"), "o"),
      "step-6",
    );
    const fresh = input(SETTINGS);
    const adapter = {
      config: parseAdapterConfig(JSON.parse(text(ckpt, "adapter_config.json")), "a", []),
      tensors: parseSafetensors(bytes(ckpt, "adapter_model.safetensors"), "a").tensors,
      source: "a",
    };
    const again = new MemoryRunStorage();
    assert.equal(await runFineTune(planFineTune({ ...fresh, adapter, resume: state }), again), null);
    assert.equal(again.metrics.length, 0);
    assert.ok(again.outputs);
  });

  it("refuses settings that do not fit the inputs, before anything is stored", () => {
    const cases: [SettingValues, Partial<FineTuneInput>, RegExp][] = [
      [{ steps: "2", epochs: "1" }, {}, /give --steps or --epochs, not both/],
      [{ steps: "2", warmup: "5" }, {}, /--warmup 5 is more than the run's 2 steps/],
      [{ steps: "2", "eval-every": "1" }, { valid: null }, /--eval-every 1 needs validation data/],
      [{ steps: "2", rank: "4", alpha: "1e308" }, {}, /--rank \/ --alpha \/ --dropout/],
    ];
    for (const [values, extra, message] of cases)
      assert.throws(
        () => planFineTune(input(values, extra)),
        (e) => e instanceof SettingsError && message.test(e.message),
      );
    assert.throws(() => settingsFrom({ rank: "0" }), /--rank must be an integer >= 1, got "0"/);
  });
});
