/** The `lora` command line, run as a user runs it: output, help, exit codes, and bad input. */
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { assertClose, fixturesDir, lora, SHARED_MISSING, sharedData } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("lora params", () => {
  it("prints the paper's arithmetic", () => {
    const a = lora("params", "--shape", "1000x1000", "--rank", "4");
    assert.equal(a.code, 0);
    assert.match(a.out, /1000x1000 +1,000,000 +8,000 +125×/);
    assert.match(lora("params", "--shape", "1000x1000", "--rank", "2").out, /250×/);
    const gpt3 = lora("params", "--shape", "12288x12288", "--rank", "4").out;
    assert.match(gpt3, /150,994,944 +98,304 +1,536×/);
  });

  it("totals several shapes times --matrices", () => {
    const r = lora("params", "--shape", "100x100", "--shape", "100x300", "--rank", "2", "--matrices", "3");
    // full: (10,000 + 30,000) * 3; LoRA: (400 + 800) * 3
    assert.match(r.out, /total \(×3\) +120,000 +3,600 +33\.3×/);
  });

  it("rejects bad values with a one-line message and exit code 2", () => {
    for (const [args, msg] of [
      [["--shape", "10x"], /--shape must look like DxK/],
      [["--shape", "10x10", "--rank", "0"], /--rank must be an integer >= 1, got "0"/],
      [["--shape", "10x10", "--rank", "11"], /--rank 11 is larger than min\(d, k\) = 10/],
      [["--shape", "10x10", "--bogus"], /Unknown option '--bogus'/],
      [[], /at least one --shape/],
    ] as const) {
      const r = lora("params", ...args);
      assert.equal(r.code, 2, r.err);
      assert.match(r.err, msg);
      assert.equal(r.err.trim().split("\n").length, 1, "one line, no stack trace");
    }
  });
});

describe("help", () => {
  it("lists every command, and each command's flags", () => {
    const main = lora("--help");
    assert.equal(main.code, 0);
    for (const c of ["generate", "eval", "params"]) {
      assert.match(main.out, new RegExp(`\\n  ${c} `));
      const h = lora(c, "--help");
      assert.equal(h.code, 0);
      assert.match(h.out, /Usage: lora /);
      assert.match(h.out, /--debug/);
    }
    assert.match(lora("generate", "--help").out, /--temperature <T>[\s\S]*--top-p <P>/);
    assert.equal(lora("nope").code, 2);
  });
});

describe("lora eval and generate on fixtures", () => {
  const llama = join(fixturesDir, "models/llama_gqa_tied");
  const expected = JSON.parse(readFileSync(join(llama, "expected.json"), "utf8"));
  const data = join(tmp, "ids.jsonl");
  writeFileSync(
    data,
    expected.input_ids.map((ids: number[]) => JSON.stringify({ input_ids: ids })).join("\n"),
  );

  it("eval --json reports the PyTorch loss over pre-tokenised rows, with and without an adapter", () => {
    // f32 base weights: --base-dtype auto is bf16 on a backend with fast bf16 products
    const base = lora("eval", "--model", llama, "--data", data, "--json", "--base-dtype", "f32");
    assert.equal(base.code, 0, base.err);
    const r = JSON.parse(base.out);
    assert.equal(r.tokens, 16);
    assertClose([r.loss, r.perplexity], [expected.loss_base, Math.exp(expected.loss_base)], "f32", "base");
    const ad = JSON.parse(
      lora(
        "eval",
        "--model",
        llama,
        "--adapter",
        join(llama, "adapter"),
        "--data",
        data,
        "--json",
        "--base-dtype",
        "f32",
      ).out,
    );
    assertClose([ad.loss], [expected.loss_adapter], "f32", "adapter");
  });

  it("bad input: one message naming the file, non-zero exit, no stack trace", () => {
    const copy = (name: string) => {
      const dir = join(tmp, name);
      cpSync(llama, dir, { recursive: true });
      return dir;
    };
    const truncated = copy("truncated");
    truncateSync(join(truncated, "model.safetensors"), 5000);
    const wrongShape = copy("wrong-shape");
    const cfg = JSON.parse(readFileSync(join(wrongShape, "config.json"), "utf8"));
    writeFileSync(join(wrongShape, "config.json"), JSON.stringify({ ...cfg, intermediate_size: 50 }));
    const unknownType = copy("unknown-type");
    writeFileSync(join(unknownType, "config.json"), JSON.stringify({ ...cfg, model_type: "mamba" }));
    const corrupt = copy("corrupt");
    writeFileSync(join(corrupt, "config.json"), "{ not json");
    const cases: [string[], RegExp][] = [
      [["--model", join(tmp, "missing")], /missing\/config.json: cannot read/],
      [["--model", corrupt], /corrupt\/config.json: invalid JSON/],
      [["--model", truncated], /truncated\/model.safetensors: invalid safetensors file[\s\S]*truncated/],
      [
        ["--model", wrongShape],
        /wrong-shape: the weights do not fit config.json[\s\S]*mlp.gate_proj.weight" has shape \[48, 32\], but config.json implies \[50, 32\]/,
      ],
      [
        ["--model", unknownType],
        /model_type "mamba" is not supported; supported: gemma3, gemma3_text, gpt2, llama, mistral, phi3, qwen2, qwen3, smollm3/,
      ],
      [
        ["--model", llama, "--adapter", join(fixturesDir, "models/gpt2/adapter")],
        /adapter does not fit this model \(\d+ problems\):[\s\S]*transformer.h.0.attn.c_attn" is not a linear layer of this model/,
      ],
      [["--model", llama, "--data", join(tmp, "none.jsonl")], /none.jsonl/],
    ];
    for (const [args, msg] of cases) {
      const r = lora("eval", "--data", data, ...args);
      assert.notEqual(r.code, 0);
      assert.match(r.err, msg);
      assert.doesNotMatch(r.err, /\n\s+at /, "no stack trace without --debug");
    }
    assert.match(lora("eval", "--data", data, "--model", corrupt, "--debug").err, /\n\s+at /);
  });

  it("stories260K: greedy generation reproduces the golden continuation", (t) => {
    const dir = sharedData("stories260K-hf");
    if (!dir) return t.skip(SHARED_MISSING);
    const golden = JSON.parse(readFileSync(join(dir, "golden_greedy.json"), "utf8"));
    const r = lora(
      "generate",
      "--model",
      dir,
      "--prompt",
      "Once upon a time",
      "--max-tokens",
      "40",
      "--temperature",
      "0",
    );
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, `${golden.full_text}\n`);
  });
});
