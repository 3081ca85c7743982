/** The committed base-model tokenizer (assets/base-model): loads, special ids, exact round trips. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { loadTokenizer } from "../../src/io/node/tokenizer-file.js";
import { repoRoot } from "../helpers.js";

const tok = loadTokenizer(join(repoRoot, "assets/base-model"));

test("base tokenizer: vocabulary and special token ids", () => {
  assert.equal(tok.vocabSize, 4096);
  assert.equal(tok.bosToken, "<|endoftext|>");
  assert.equal(tok.eosToken, "<|endoftext|>");
  assert.equal(tok.bosId, 0);
  assert.deepEqual(tok.eosIds, [0]);
  assert.equal(tok.padId, 1);
  // The post-processor prepends BOS; without special tokens nothing is added.
  const plain = tok.encode("The Congress", { addSpecialTokens: false });
  assert.deepEqual(tok.encode("The Congress"), [0, ...plain]);
  assert.equal(tok.decode([0, ...plain]), "<|endoftext|>The Congress");
  assert.equal(tok.decode([0, ...plain], { skipSpecialTokens: true }), "The Congress");
  // Frequent corpus words are single tokens.
  assert.equal(tok.encode(" the", { addSpecialTokens: false }).length, 1);
  assert.equal(tok.encode(" Congress", { addSpecialTokens: false }).length, 1);
});

test("base tokenizer: encode then decode gives the text back exactly", () => {
  for (const text of [
    "Fellow-Citizens of the Senate and House of Representatives: In meeting you again...",
    "He said, \"Don't go!\" -- and she didn't. (Really?) 1,234.56 dollars; 100% of 2016.",
    "Line one\nline two\n\n  indented\ttab  ",
    "Café, naïve, Zürich — “quotes” 😀 日本語 ∑",
    " leading space and trailing space ",
    "<|endoftext|> is special, <|pad|> too",
  ]) {
    const ids = tok.encode(text, { addSpecialTokens: false });
    assert.equal(tok.decode(ids), text, JSON.stringify(text));
    assert.ok(ids.every((id) => id >= 0 && id < 4096));
  }
  // Special-token text in the input is recognised as the special token.
  assert.deepEqual(tok.encode("<|endoftext|>", { addSpecialTokens: false }), [0]);
});
