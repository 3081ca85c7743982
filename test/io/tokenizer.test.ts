/** Tests for the Tokenizer wrapper, the stream decoder and loadTokenizer (real stories260K + a tiny chat fixture). */
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadTokenizer } from "../../src/io/node/tokenizer-file.js";
import { createStreamDecoder, type Tokenizer } from "../../src/io/tokenizer.js";
import { fixturesDir, SHARED_MISSING, sharedData } from "../helpers.js";

const storiesDir = sharedData("stories260K-hf");
const tinyDir = join(fixturesDir, "tokenizers/tiny-chat");
const readJson = (path: string) => JSON.parse(readFileSync(path, "utf8"));

/** Feeds ids one at a time; returns the emitted chunks (flush last). */
function stream(tok: Tokenizer, ids: number[], context?: number[]): string[] {
  const dec = createStreamDecoder(tok, { context });
  return [...ids.map((id) => dec.push(id)), dec.flush()];
}

test("stories260K: encode, special ids, decode of the golden continuation", (t) => {
  if (!storiesDir) return t.skip(SHARED_MISSING);
  const tok = loadTokenizer(storiesDir);
  assert.deepEqual(tok.encode("Once upon a time"), [1, 403, 407, 261, 378]);
  assert.deepEqual(tok.encode("Once upon a time", { addSpecialTokens: false }), [403, 407, 261, 378]);
  assert.equal(tok.bosId, 1);
  assert.deepEqual(tok.eosIds, [2]);
  assert.equal(tok.padId, null);
  assert.equal(tok.vocabSize, 512);
  assert.equal(tok.chatTemplate, null);

  const golden = readJson(join(storiesDir, "golden_greedy.json"));
  assert.equal(tok.decode(golden.generated_ids), golden.continuation);
  const all = [...golden.prompt_ids, ...golden.generated_ids];
  assert.equal(tok.decode(all, { skipSpecialTokens: true }), golden.full_text);
  // Like transformers' LlamaTokenizerFast: special tokens kept, one leading space stripped.
  assert.equal(tok.decode(golden.prompt_ids), "<s> Once upon a time");
  assert.equal(tok.decode([407]), "upon");
  assert.equal(tok.decode([]), "");
  assert.equal(
    tok.decode([1, 9999, 403], { skipSpecialTokens: true }),
    "Once",
    "out-of-vocab ids are dropped",
  );
});

test("stories260K: stream decoder reproduces decode(), byte fallback included", (t) => {
  if (!storiesDir) return t.skip(SHARED_MISSING);
  const tok = loadTokenizer(storiesDir);
  const golden = readJson(join(storiesDir, "golden_greedy.json"));
  assert.equal(stream(tok, golden.generated_ids).join(""), golden.continuation);

  const text = "Hi 😀 你好, café! Ünïcödé ✓ done.";
  const ids = tok.encode(text, { addSpecialTokens: false });
  assert.ok(
    ids.some((id) => id >= 3 && id <= 258),
    "the text should use byte-fallback tokens",
  );
  const chunks = stream(tok, ids);
  assert.equal(chunks.join(""), text);
  assert.equal(tok.decode(ids), text);
  assert.ok(
    chunks.every((c) => !c.includes("\uFFFD")),
    "no partial characters are emitted",
  );
  assert.ok(chunks.includes("😀"), "the 4-byte emoji comes out as one chunk");

  // Context ids give the first new token its leading space; they are never emitted.
  assert.deepEqual(stream(tok, [407], [1, 403]), [" upon", ""]);
  assert.deepEqual(stream(tok, [407]), ["upon", ""]);
  // flush() releases an incomplete byte sequence.
  const dec = createStreamDecoder(tok);
  assert.equal(dec.push(3 + 0xf0), "", "<0xF0> alone is an incomplete character");
  assert.equal(dec.flush(), "\uFFFD");
});

test("stories260K: chat template missing -> explains what to do", (t) => {
  if (!storiesDir) return t.skip(SHARED_MISSING);
  const tok = loadTokenizer(storiesDir);
  assert.throws(
    () => tok.applyChatTemplate([{ role: "user", content: "hi" }]),
    /no chat template .*pass a plain prompt instead, or use a model that has a chat template/,
  );
});

test("tiny-chat fixture: special ids, config token objects, encode/decode", () => {
  const tok = loadTokenizer(tinyDir);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.bosToken, "<s>");
  assert.equal(tok.eosToken, "<|im_end|>", "eos_token given as {content} object");
  assert.deepEqual(tok.eosIds, [4, 2], "tokenizer_config eos first, then generation_config ids");
  assert.equal(tok.padId, 2);
  assert.equal(tok.vocabSize, 89);
  assert.deepEqual(tok.encode("hello user"), [1, 88, 5, 76]);
  assert.deepEqual(
    tok.encode("<|im_start|>user\nhi<|im_end|>", { addSpecialTokens: false }),
    [3, 76, 6, 14, 15, 4],
  );
  assert.equal(tok.decode([1, 88, 5, 76]), "<s>hello user");
  assert.equal(tok.decode([1, 88, 5, 76, 4], { skipSpecialTokens: true }), "hello user");
  // one id at a time (decodes of one id are cached): the same text again, each way, and none for an id
  // outside the vocabulary
  for (let round = 0; round < 2; round++) {
    assert.equal(tok.decode([1]), "<s>");
    assert.equal(tok.decode([1], { skipSpecialTokens: true }), "");
    assert.equal(tok.decode([88]), "hello");
    assert.equal(tok.decode([-1]), "");
    assert.equal(tok.decode([9999]), "");
  }
});

test("tiny-chat fixture: add_bos_token / add_eos_token override the post-processor", async () => {
  const { Tokenizer } = await import("../../src/io/tokenizer.js");
  const tokenizerJson = readJson(join(tinyDir, "tokenizer.json"));
  const config = readJson(join(tinyDir, "tokenizer_config.json"));
  const make = (over: Record<string, unknown>) =>
    Tokenizer.fromJSON({ tokenizerJson, tokenizerConfig: { ...config, ...over } });
  assert.deepEqual(make({ add_bos_token: undefined, add_eos_token: undefined }).encode("hello"), [1, 88]);
  assert.deepEqual(make({ add_bos_token: false }).encode("hello"), [88]);
  assert.deepEqual(make({ add_eos_token: true }).encode("hello"), [1, 88, 4]);
  // A minimal tokenizer.json (no normalizer/decoder/... keys) and no configs at all.
  const bare = Tokenizer.fromJSON({ tokenizerJson: { model: tokenizerJson.model } });
  assert.deepEqual(bare.encode("hello"), [88]);
  assert.equal(bare.bosId, null);
  assert.deepEqual(bare.eosIds, []);
  assert.throws(
    () => Tokenizer.fromJSON({ tokenizerJson: [] }),
    /tokenizer.json: expected an object with a "model"/,
  );
});

test("tiny-chat fixture: applyChatTemplate renders like transformers", async () => {
  const tok = loadTokenizer(tinyDir);
  const msgs = [
    { role: "system", content: "Be nice." },
    { role: "user", content: "hello" },
  ];
  const prompt = "<s><|im_start|>system\nBe nice.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n";
  assert.equal(tok.applyChatTemplate(msgs), prompt);
  assert.equal(
    tok.applyChatTemplate(msgs, { addGenerationPrompt: true }),
    `${prompt}<|im_start|>assistant\n`,
  );

  // chat_template as a plain string; and as a list without "default" (-> no template).
  const { Tokenizer } = await import("../../src/io/tokenizer.js");
  const tokenizerJson = readJson(join(tinyDir, "tokenizer.json"));
  const plain = Tokenizer.fromJSON({
    tokenizerJson,
    tokenizerConfig: {
      eos_token: "</s>",
      chat_template: "{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}",
    },
  });
  assert.equal(plain.applyChatTemplate(msgs), "Be nice.</s>hello</s>");
  const noDefault = Tokenizer.fromJSON({
    tokenizerJson,
    tokenizerConfig: { chat_template: [{ name: "x", template: "x" }] },
  });
  assert.equal(noDefault.chatTemplate, null);
  assert.throws(() => noDefault.applyChatTemplate(msgs), /has no chat template/);
});

test("loadTokenizer: missing tokenizer.json, bad JSON, chat_template.jinja", () => {
  const dir = mkdtempSync(join(tmpdir(), "tok-"));
  try {
    assert.throws(
      () => loadTokenizer(dir),
      (e: Error) => e.message.includes(join(dir, "tokenizer.json")) && /save_pretrained/.test(e.message),
    );
    cpSync(tinyDir, dir, { recursive: true });
    writeFileSync(join(dir, "generation_config.json"), "{ nope");
    assert.throws(
      () => loadTokenizer(dir),
      (e: Error) => e.message.startsWith(`${join(dir, "generation_config.json")}: invalid JSON`),
    );
    rmSync(join(dir, "generation_config.json"));
    const config = readJson(join(dir, "tokenizer_config.json"));
    delete config.chat_template;
    writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(config));
    writeFileSync(join(dir, "chat_template.jinja"), "{{ bos_token }}{{ messages[0].content }}");
    const tok = loadTokenizer(dir);
    assert.equal(tok.applyChatTemplate([{ role: "user", content: "hi" }]), "<s>hi");
    assert.deepEqual(tok.eosIds, [4], "no generation_config -> only tokenizer_config's eos");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
