/** `lora train --dora` and the commands that read its adapter, as a user runs them (issue #15, DoRA). */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { readSafetensorsFile } from "../../src/io/node/safetensors-file.js";
import { fixtureModel, lora, tokenRows, writeJsonl } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-dora-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const data = join(tmp, "data");
mkdirSync(data);
writeJsonl(join(data, "train.jsonl"), tokenRows(8));
const ok = (...args: string[]) => {
  const r = lora(...args);
  assert.equal(r.code, 0, r.err);
  return r;
};
const evalLoss = (...args: string[]) =>
  JSON.parse(ok("eval", ...args, "--data", data, "--json", "--base-dtype", "f32").out).loss as number;

describe("lora train --dora (gpt2 fixture: Conv1D, fan_in_fan_out)", () => {
  const out = join(tmp, "dora");
  const gpt2 = fixtureModel("gpt2");

  it("writes a PEFT DoRA adapter: use_dora, one lora_magnitude_vector [out] per adapted module", () => {
    ok(
      "train",
      "--model",
      gpt2,
      "--data",
      data,
      "--out",
      out,
      "--steps",
      "2",
      "--rank",
      "4",
      "--dora",
      "--lr",
      "1e-2",
    );
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.equal(cfg.use_dora, true);
    assert.equal(cfg.fan_in_fan_out, true);
    const t = readSafetensorsFile(join(out, "adapter_model.safetensors")).tensors;
    const m = t.get("base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector")!;
    assert.deepEqual([m.shape, m.dtype], [[72], "F32"]);
    assert.equal([...t.keys()].filter((k) => k.endsWith(".lora_magnitude_vector")).length, 2);
  });

  it("eval reads it; lora merge folds it into a folder that evaluates the same", () => {
    const withAdapter = evalLoss("--model", gpt2, "--adapter", out);
    const merged = join(tmp, "merged");
    ok("merge", "--model", gpt2, "--adapter", out, "--out", merged);
    const m = evalLoss("--model", merged);
    assert.ok(Math.abs(m - withAdapter) <= 1e-4 * Math.abs(withAdapter), `${m} vs ${withAdapter}`);
  });

  it("export to GGUF or mlx is refused, naming the adapter and what to do", () => {
    for (const format of ["gguf", "mlx"]) {
      const r = lora(
        "export",
        "--adapter",
        out,
        "--model",
        gpt2,
        "--format",
        format,
        "--out",
        join(tmp, format === "gguf" ? "x.gguf" : "x-mlx"),
      );
      assert.notEqual(r.code, 0);
      assert.match(
        r.err,
        new RegExp(
          `${out.replace(/[/.]/g, "\\$&")} is a DoRA adapter \\(use_dora: true\\), which --format ${format} cannot hold`,
        ),
      );
      assert.match(r.err, /lora merge --model M --adapter/);
    }
  });

  it("--dora with --full, or on a plain LoRA --adapter, is refused", () => {
    const full = lora(
      "train",
      "--model",
      gpt2,
      "--data",
      data,
      "--out",
      join(tmp, "f"),
      "--steps",
      "1",
      "--full",
      "--dora",
    );
    assert.notEqual(full.code, 0);
    assert.match(full.err, /--full trains every weight; --dora is for an adapter/);
    const plain = lora(
      "train",
      "--model",
      gpt2,
      "--data",
      data,
      "--out",
      join(tmp, "p"),
      "--steps",
      "1",
      "--dora",
      "--adapter",
      join(gpt2, "adapter"),
    );
    assert.notEqual(plain.code, 0);
    assert.match(plain.err, /--dora: the adapter .* is a plain LoRA adapter \(use_dora false\)/);
  });
});
