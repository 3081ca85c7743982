/** --base-dtype on the command line: train, resume, --config, eval, generate, and the refusals. */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { SettingsError, settingsFrom } from "../../src/train/settings.js";
import { assertClose, fixturesDir, lora, repoRoot } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-base-dtype-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const tiny = join(fixturesDir, "models/llama_gqa_tied");
const data = join(tmp, "data");
mkdirSync(data);
const rows = (n: number, from: number) =>
  Array.from({ length: n }, (_, i) => ({
    input_ids: Array.from({ length: 12 }, (_, t) => (5 * (from + i) + 3 * t) % 60),
  }))
    .map((r) => `${JSON.stringify(r)}\n`)
    .join("");
writeFileSync(join(data, "train.jsonl"), rows(16, 0));
writeFileSync(join(data, "valid.jsonl"), rows(4, 100));
const train = (out: string, ...args: string[]) =>
  lora("train", "--model", tiny, "--data", data, "--out", out, "--steps", "2", "--eval-every", "0", ...args);

describe("--base-dtype", () => {
  it("is a train setting: default auto, one of auto, f32, bf16, f16", () => {
    assert.equal(settingsFrom({})["base-dtype"], "auto");
    assert.equal(settingsFrom({ "base-dtype": "f16" })["base-dtype"], "f16");
    assert.throws(
      () => settingsFrom({ "base-dtype": "fp8" }),
      (e) =>
        e instanceof SettingsError &&
        /--base-dtype must be one of auto, f32, bf16, f16, got "fp8"/.test(e.message),
    );
  });

  it("lora train trains on a bf16 base, records it, and a resume with another dtype is refused", () => {
    const out = join(tmp, "bf16-run");
    const r = train(out, "--base-dtype", "bf16", "--save-every", "1");
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /base weights bf16/);
    const again = lora("train", "--resume", join(out, "checkpoints/step-1"), "--base-dtype", "f32");
    assert.equal(again.code, 2);
    assert.match(again.err, /--base-dtype: "bf16" in the checkpoint, "f32" now/);
    const same = lora("train", "--resume", join(out, "checkpoints/step-1"));
    assert.equal(same.code, 0, same.err);
    assert.match(same.out, /base weights bf16/);
  });

  it("auto resolves for the backend, and --config takes base_dtype", () => {
    assert.match(train(join(tmp, "auto-run")).out, /base weights (f32|bf16)\)/);
    const cfg = join(tmp, "cfg.json");
    writeFileSync(cfg, JSON.stringify({ base_dtype: "f16" }));
    const r = train(join(tmp, "cfg-run"), "--config", cfg);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /base weights f16/);
  });

  it("--full refuses a 16-bit base, saying why", () => {
    const r = train(join(tmp, "full-run"), "--full", "--base-dtype", "bf16");
    assert.equal(r.code, 2);
    assert.match(
      r.err,
      /--full trains every weight, so the base weights must be f32; drop --base-dtype bf16/,
    );
    assert.equal(r.err.trim().split("\n").length, 1);
  });

  it("lora eval and lora generate take it; eval's loss stays close to f32", () => {
    const loss = (...args: string[]) => {
      const r = lora("eval", "--model", tiny, "--data", data, "--json", ...args);
      assert.equal(r.code, 0, r.err);
      return JSON.parse(r.out).loss as number;
    };
    assertClose([loss("--base-dtype", "bf16")], [loss("--base-dtype", "f32")], "bf16", "eval loss");
    const bad = lora("eval", "--model", tiny, "--data", data, "--base-dtype", "half");
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--base-dtype must be one of auto, f32, bf16, f16, got "half"/);
    const model = join(repoRoot, "assets/base-model");
    const g = lora(
      "generate",
      "--model",
      model,
      "--prompt",
      "The",
      "--max-tokens",
      "4",
      "--base-dtype",
      "f16",
    );
    assert.equal(g.code, 0, g.err);
    assert.match(g.out, /^The/);
  });
});
