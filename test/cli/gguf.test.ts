/** `--model FILE.gguf` through the CLI: train, eval, generate, merge and params on a GGUF model. */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { noGrad } from "../../src/autograd/index.js";
import { loadAdapter } from "../../src/io/node/adapter-folder.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import {
  assertClose,
  assertOk,
  fixtureModel,
  fixturesDir,
  lora,
  SHARED_MISSING,
  sharedData,
  writeJsonl,
} from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-gguf-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const gguf = (name: string) => join(fixturesDir, "gguf/models", `${name}.gguf`);

describe("lora with a GGUF model", () => {
  it("merge of a GGUF model and its HF folder's adapter writes an HF folder with the adapter's logits", () => {
    const out = join(tmp, "merged-llama");
    const r = lora(
      "merge",
      "--model",
      gguf("llama_untied.q8_0"),
      "--adapter",
      join(fixtureModel("llama_untied"), "adapter"),
      "--out",
      out,
    );
    assertOk(r);
    assert.match(r.out, /wrote .*merged-llama: config\.json, model\.safetensors\n/);
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
    assert.equal(config.model_type, "llama");
    // the merged folder computes what the GGUF model with the adapter computes (loaded in-process)
    const expected = JSON.parse(readFileSync(join(fixtureModel("llama_untied"), "expected.json"), "utf8"));
    const ids = Int32Array.from(expected.input_ids.flat());
    const shape: [number, number] = [expected.input_ids.length, expected.input_ids[0].length];
    const merged = noGrad(() => loadModelFolder(out).model.forward(ids, shape));
    const adapted = loadModelFolder(gguf("llama_untied.q8_0"));
    loadAdapter(adapted.model, join(fixtureModel("llama_untied"), "adapter"), ["q_proj", "v_proj"]);
    assertClose(
      merged.data,
      noGrad(() => adapted.model.forward(ids, shape)).data,
      "f32",
      "merged vs adapted",
    );
    // and the adapter moved the logits away from the base's
    const base = JSON.parse(readFileSync(join(fixturesDir, "gguf/models/llama_untied.q8_0.json"), "utf8"))
      .logits.data as number[];
    assert.ok(merged.data.some((x, i) => Math.abs(x - base[i]!) > 1e-3));
  });

  it("eval on pre-tokenised rows and params read a GGUF model; a GGUF without a tokenizer needs ids", () => {
    const data = join(tmp, "ids.jsonl");
    const expected = JSON.parse(readFileSync(join(fixtureModel("qwen3"), "expected.json"), "utf8"));
    writeJsonl(
      data,
      expected.input_ids.map((ids: number[]) => ({ input_ids: ids })),
    );
    const a = lora("eval", "--model", gguf("qwen3.f32"), "--data", data);
    const b = lora("eval", "--model", fixtureModel("qwen3"), "--data", data);
    assertOk(a);
    assertOk(b);
    assert.equal(a.out.match(/loss [0-9.]+/)![0], b.out.match(/loss [0-9.]+/)![0]);
    const p = lora("params", "--model", gguf("qwen2.q8_0"), "--targets", "all-linear");
    assertOk(p);
    assert.match(p.out, /qwen2\.q8_0\.gguf \(qwen2\), LoRA r=8/);
    assert.match(p.out, /mlp\.down_proj\s+2 × 32x48/);
    const text = join(tmp, "t.txt");
    writeFileSync(text, "hello\n");
    const t = lora("eval", "--model", gguf("qwen3.f32"), "--data", text);
    assert.notEqual(t.code, 0);
    assert.match(t.err, /text rows need a tokenizer/);
  });

  it("stories260K.gguf: generate gives the golden text; an adapter trained on it is an adapter of the HF folder; merge writes its tokenizer", (t) => {
    const hf = sharedData("stories260K-hf");
    const dir = sharedData("stories260K");
    if (!hf || !dir) return t.skip(SHARED_MISSING);
    const model = join(dir, "stories260K.gguf");
    const golden = JSON.parse(readFileSync(join(hf, "golden_greedy.json"), "utf8"));
    const g = lora(
      "generate",
      "--model",
      model,
      "--prompt",
      golden.prompt,
      "--max-tokens",
      "40",
      "--temperature",
      "0",
    );
    assertOk(g);
    assert.equal(g.out, `${golden.full_text}\n`);
    const data = join(tmp, "stories.txt");
    writeFileSync(data, "Once upon a time there was a cat.\n\nThe dog ran to the park.\n");
    const run = join(tmp, "stories-run");
    assertOk(lora("train", "--model", model, "--data", data, "--out", run, "--steps", "3", "--lr", "0.01"));
    const onGGUF = lora("eval", "--model", model, "--adapter", run, "--data", data);
    const onHF = lora("eval", "--model", hf, "--adapter", run, "--data", data);
    assertOk(onGGUF);
    assertOk(onHF);
    const loss = (s: string) => Number(s.match(/loss ([0-9.]+)/)![1]);
    assertClose([loss(onGGUF.out)], [loss(onHF.out)], "f32", "adapter loss, GGUF vs HF base");
    const merged = join(tmp, "stories-merged");
    const m = lora("merge", "--model", model, "--adapter", run, "--out", merged);
    assertOk(m);
    for (const f of [
      "config.json",
      "model.safetensors",
      "tokenizer.json",
      "tokenizer_config.json",
      "generation_config.json",
    ])
      assert.ok(existsSync(join(merged, f)), f);
    const a = lora(
      "generate",
      "--model",
      merged,
      "--prompt",
      golden.prompt,
      "--max-tokens",
      "12",
      "--temperature",
      "0",
    );
    const b = lora(
      "generate",
      "--model",
      model,
      "--adapter",
      run,
      "--prompt",
      golden.prompt,
      "--max-tokens",
      "12",
      "--temperature",
      "0",
    );
    assertOk(a);
    assert.equal(a.out, b.out);
  });
});
