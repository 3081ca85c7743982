/** `lora export --format gguf` as a user runs it: what it writes, what it prints, what it refuses. */
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { readGGUFAdapterFile } from "../../src/io/node/gguf-adapter-file.js";
import { readJson } from "../../src/io/node/json-file.js";
import { assertOk, fixtureModel, fixturesDir, lora, loraIn } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-export-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const plain = join(fixturesDir, "gguf-adapter", "llama_gqa_tied", "plain");
const patterns = join(fixturesDir, "gguf-adapter", "llama_gqa_tied", "patterns");

describe("lora export --format gguf", () => {
  it("writes the file, finding the base model from base_model_name_or_path (relative to the checkout)", () => {
    const out = join(tmp, "plain.gguf");
    const r = loraIn(
      { cwd: join(fixturesDir, "../..") },
      "export",
      "--adapter",
      plain,
      "--format",
      "gguf",
      "--out",
      out,
    );
    assertOk(r);
    assert.match(r.out, /wrote .*: a GGUF LoRA file for llama\.cpp .*, 14 LoRA layer\(s\)/);
    assert.match(r.err, /note: GGUF architecture llama, adapter\.lora\.alpha 8, f32/);
    assert.match(r.err, /4 q\/k module\(s\): lora_b rows permuted/);
    const back = readGGUFAdapterFile(out, readJson(join(fixtureModel("llama_gqa_tied"), "config.json"))!);
    assert.equal(back.tensors.size, 28);
    assert.deepEqual(readFileSync(out), readFileSync(out), "written once, whole");
  });

  it("--model and --outtype f16; says which modules were folded", () => {
    const out = join(tmp, "patterns.gguf");
    const r = lora(
      "export",
      ...["--adapter", patterns, "--format", "gguf", "--out", out, "--outtype", "f16"],
      ...["--model", fixtureModel("llama_gqa_tied")],
    );
    assertOk(r);
    assert.match(r.err, /, f16, \d+ bytes\n/);
    assert.match(r.err, /3 module\(s\) with their own rank or alpha: .* folded into lora_b/);
    assert.ok(existsSync(out));
  });

  it("refuses an --out that is the adapter, not .gguf, a folder, or exists without --overwrite", () => {
    const args = [
      "export",
      "--adapter",
      plain,
      "--format",
      "gguf",
      "--model",
      fixtureModel("llama_gqa_tied"),
    ];
    const refused = (out: string, pattern: RegExp, ...more: string[]) => {
      const r = lora(...args, "--out", out, ...more);
      assert.equal(r.code, 2, r.err);
      assert.match(r.err, pattern);
      assert.equal(r.err.trim().split("\n").length, 1, "one line");
    };
    refused(plain, /--out .* is the adapter folder; lora export never writes where it reads/);
    refused(join(tmp, "x.safetensors"), /give it a name ending in \.gguf/);
    mkdirSync(join(tmp, "dir.gguf"));
    refused(join(tmp, "dir.gguf"), /is a folder; give a file name ending in \.gguf/);
    writeFileSync(join(tmp, "old.gguf"), "old");
    refused(join(tmp, "old.gguf"), /already exists; pass --overwrite to replace it/);
    assert.equal(readFileSync(join(tmp, "old.gguf"), "utf8"), "old");
    assertOk(lora(...args, "--out", join(tmp, "old.gguf"), "--overwrite"));
    refused(join(tmp, "y.gguf"), /--format must be one of gguf, mlx, got "onnx"/, "--format", "onnx");
    refused(join(tmp, "y.gguf"), /--outtype must be one of f32, f16, bf16, got "q4_0"/, "--outtype", "q4_0");
  });

  it("says to pass --model when the adapter's base model is not a folder here", () => {
    const dir = join(tmp, "orphan");
    cpSync(plain, dir, { recursive: true });
    const config = readJson(join(dir, "adapter_config.json"))!;
    writeFileSync(
      join(dir, "adapter_config.json"),
      JSON.stringify({ ...config, base_model_name_or_path: "org/remote-model" }),
    );
    const r = lora("export", "--adapter", dir, "--format", "gguf", "--out", join(tmp, "orphan.gguf"));
    assert.equal(r.code, 2);
    assert.match(
      r.err,
      /names the base model "org\/remote-model", which is not a model folder here; pass --model DIR/,
    );
    assert.ok(!existsSync(join(tmp, "orphan.gguf")));
  });

  it("refuses modules_to_save, naming it, and writes nothing", () => {
    const dir = join(tmp, "mts");
    cpSync(plain, dir, { recursive: true });
    const config = readJson(join(dir, "adapter_config.json"))!;
    writeFileSync(
      join(dir, "adapter_config.json"),
      JSON.stringify({ ...config, modules_to_save: ["lm_head"] }),
    );
    const r = lora(
      "export",
      ...[
        "--adapter",
        dir,
        "--format",
        "gguf",
        "--out",
        join(tmp, "mts.gguf"),
        "--model",
        fixtureModel("llama_gqa_tied"),
      ],
    );
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      /holds modules_to_save \["lm_head"\]; lora export --format gguf writes LoRA on Linear layers only/,
    );
    assert.ok(!existsSync(join(tmp, "mts.gguf")));
  });
});
