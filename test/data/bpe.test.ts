/** Tests for the plain-TypeScript byte-level BPE trainer (scripts/base-model/bpe.ts). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { bytesToUnicode, countPieces, tokenizerJson, trainBpe } from "../../scripts/base-model/bpe.js";
import { Tokenizer } from "../../src/io/tokenizer.js";

const counted = (text: string) => {
  const counts = new Map<string, number>();
  countPieces(text, counts);
  return counts;
};

test("bytes_to_unicode is GPT-2's: printable bytes map to themselves, space to Ġ, newline to Ċ", () => {
  const map = bytesToUnicode();
  assert.equal(new Set(map).size, 256);
  assert.equal(map[65], "A");
  assert.equal(map[32], "Ġ");
  assert.equal(map[10], "Ċ");
});

test("tiny training run: expected merges, ties to the smaller pair of ids, stop below min frequency", () => {
  // "a a a b d a a a b a c": aa (4) first; then (aa,a) and (a,b) tie at 2 and (a,b) has smaller ids.
  const one = trainBpe(counted("aaabdaaabac"), { vocabSize: 1000, specialTokens: ["<|endoftext|>"] });
  assert.deepEqual(one.merges, [
    ["a", "a"],
    ["a", "b"],
    ["aa", "ab"],
  ]);
  assert.equal(one.vocab.length, 1 + 256 + 3);
  assert.equal(one.vocab[0], "<|endoftext|>");
  assert.equal(one.vocab.at(-1), "aaab");

  // Pieces: hug, Ġhug x2, Ġpug, Ġpun. (Ġ,p) and (Ġ,hug) tie at 2; Ġ+p has the smaller ids.
  const text = "hug hug hug pug pun";
  const two = trainBpe(counted(text), { vocabSize: 1000 });
  assert.deepEqual(two.merges, [
    ["u", "g"],
    ["h", "ug"],
    ["Ġ", "p"],
    ["Ġ", "hug"],
  ]);
  // The vocabulary size caps the merges; the input order of the counts does not matter.
  const reversed = new Map([...counted(text)].reverse());
  assert.deepEqual(trainBpe(reversed, { vocabSize: 256 + 3 }).merges, two.merges.slice(0, 3));

  // The written tokenizer.json loads and applies the merges.
  const tok = Tokenizer.fromJSON({
    tokenizerJson: tokenizerJson(two, { bosToken: null }),
    tokenizerConfig: {},
  });
  const ids = tok.encode("hug pug", { addSpecialTokens: false });
  assert.deepEqual(
    ids.map((id) => two.vocab[id]),
    ["hug", "Ġp", "ug"],
  );
  assert.equal(tok.decode(ids), "hug pug");
});
