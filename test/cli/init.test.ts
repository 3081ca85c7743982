/**
 * --init pissa on the command line: the note on stderr, the conversion of a finished run by
 * --resume --convert-to-lora, and export's refusal of an adapter that needs the residual base.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { assertOk, fixturesDir, lora, tokenRows, writeJsonl } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-init-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const tiny = join(fixturesDir, "models/llama_gqa_tied");
const data = join(tmp, "data");
mkdirSync(data);
writeJsonl(join(data, "train.jsonl"), tokenRows(8));
const config = (dir: string) => JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8"));

describe("lora train --init pissa", () => {
  it("notes how to load the adapter; --resume --convert-to-lora then writes the plain LoRA", () => {
    const out = join(tmp, "run");
    const r = lora(
      "train",
      "--model",
      tiny,
      "--data",
      data,
      "--out",
      out,
      "--steps",
      "2",
      "--rank",
      "2",
      "--init",
      "pissa",
    );
    assertOk(r);
    assert.match(r.err, /note: the adapter has init_lora_weights "pissa".*--convert-to-lora/s);
    assert.deepEqual([config(out).r, config(out).init_lora_weights], [2, "pissa"]);
    const again = lora("train", "--resume", out, "--convert-to-lora");
    assertOk(again);
    assert.deepEqual([config(out).r, config(out).lora_alpha, config(out).init_lora_weights], [4, 32, true]);
  });

  it("lora export refuses a PiSSA adapter, saying how to convert it", () => {
    const r = lora(
      "export",
      "--adapter",
      join(fixturesDir, "init/llama-pissa/adapter"),
      "--model",
      join(fixturesDir, "models/llama_untied"),
      "--format",
      "gguf",
      "--out",
      join(tmp, "x.gguf"),
    );
    assert.notEqual(r.code, 0);
    assert.match(r.err, /init_lora_weights "pissa".*--convert-to-lora/);
  });
});
