/** The embedded base model: small enough to ship, a valid Hugging Face folder, and it reads as English. */
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { loadTokenizer } from "../../src/io/node/tokenizer-file.js";
import { generate } from "../../src/models/generate.js";
import { repoRoot } from "../helpers.js";

const dir = join(repoRoot, "assets/base-model");

it("assets/base-model is a complete folder of at most 25 MB whose greedy text is English words", () => {
  const bytes = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    .map((f) => statSync(join(dir, f)).size)
    .reduce((a, b) => a + b, 0);
  assert.ok(bytes <= 25 * 2 ** 20, `${bytes} bytes`);
  const { model, config, unused } = loadModelFolder(dir);
  const tokenizer = loadTokenizer(dir);
  assert.deepEqual(unused, []);
  assert.equal(config.vocab_size, tokenizer.vocabSize);
  const prompt = tokenizer.encode("The Congress");
  const text = tokenizer.decode([...generate(model, prompt, { maxTokens: 24, temperature: 0 })]);
  const words = text.match(/[A-Za-z]+/g) ?? [];
  assert.ok(words.length >= 10, text);
  const common = new Set([
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "that",
    "is",
    "be",
    "for",
    "by",
    "our",
    "has",
    "have",
  ]);
  assert.ok(words.filter((w) => common.has(w.toLowerCase())).length >= 3, text);
});
