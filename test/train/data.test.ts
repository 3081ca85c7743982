/** Tests for dataset parsing, row tokenization / loss masks, and reading dataset files and folders. */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseDataset } from "../../src/io/dataset.js";
import { readDataset } from "../../src/io/node/dataset-file.js";
import { loadTokenizer } from "../../src/io/node/tokenizer-file.js";
import { Tokenizer } from "../../src/io/tokenizer.js";
import { tokenizeRow } from "../../src/train/data.js";
import { fixturesDir, SHARED_MISSING, sharedData } from "../helpers.js";

const SRC = "data/train.jsonl";
const tinyDir = join(fixturesDir, "tokenizers/tiny-chat");
const SHAPE_LIST = '"text", "prompt"+"completion", "messages" or "input_ids"';
const SHAPES = `expected an object with ${SHAPE_LIST}`;

/** Asserts parseDataset throws exactly `message`. */
function parseFails(content: string, message: string, format: "txt" | "jsonl" = "jsonl") {
  assert.throws(
    () => parseDataset(content, SRC, format),
    (e: Error) => {
      assert.equal(e.message, message);
      return true;
    },
  );
}

test("parseDataset txt: blank-line separated documents", () => {
  const content = "\n\nOne line.\nSecond line.  \n\n \t\n\n  Indented doc\r\n\r\nlast\n\n\n";
  assert.deepEqual(parseDataset(content, "a.txt", "txt"), [
    { text: "One line.\nSecond line." },
    { text: "  Indented doc" },
    { text: "last" },
  ]);
  parseFails(" \n\n\t\n", `${SRC}: no documents found (the file is empty)`, "txt");
});

test("parseDataset jsonl: the four shapes, decided by key priority; extra keys dropped", () => {
  const lines = [
    '{"text": "hello", "id": 7}',
    "",
    '{"prompt": "Q", "completion": "A", "text": "ignored"}',
    '{"messages": [{"role": "user", "content": "hi", "name": "x"}], "prompt": "p", "completion": "c"}',
    '{"input_ids": [0, 5, 2], "text": "t", "messages": []}',
    '{"prompt": "only", "text": "falls back to text"}',
  ];
  assert.deepEqual(parseDataset(`${lines.join("\r\n")}\n`, SRC, "jsonl"), [
    { text: "hello" },
    { prompt: "Q", completion: "A" },
    { messages: [{ role: "user", content: "hi" }] },
    { input_ids: [0, 5, 2] },
    { text: "falls back to text" },
  ]);
});

test("parseDataset jsonl: every error case names file and line", () => {
  parseFails('{"text": "ok"}\n\n{"foo": 1}', `${SRC}:3: ${SHAPES}; got keys ["foo"]`);
  parseFails('{"prompt": "p"}', `${SRC}:1: ${SHAPES}; got keys ["prompt"]`);
  parseFails("{}", `${SRC}:1: ${SHAPES}; got keys []`);
  assert.throws(
    () => parseDataset('{"text": "a"}\n{"text": "b",}', SRC, "jsonl"),
    (e: Error) => e.message.startsWith(`${SRC}:2: invalid JSON (`) && !e.message.includes("\n"),
  );
  parseFails("[1, 2]", `${SRC}:1: expected a JSON object; got array`);
  parseFails('"text"', `${SRC}:1: expected a JSON object; got string`);
  parseFails("null", `${SRC}:1: expected a JSON object; got null`);
  parseFails('{"text": 5}', `${SRC}:1: "text" must be a string; got number`);
  parseFails(
    '{"prompt": "p", "completion": null}',
    `${SRC}:1: "prompt" and "completion" must be strings; got string and null`,
  );
  const badIds = `${SRC}:1: "input_ids" must be a non-empty array of non-negative integers`;
  parseFails('{"input_ids": [1, -2, 3]}', badIds);
  parseFails('{"input_ids": [1, 2.5]}', badIds);
  parseFails('{"input_ids": []}', badIds);
  parseFails('{"input_ids": "1 2"}', badIds);
  const badMsgs = `${SRC}:1: "messages" must be a non-empty array of {"role": string, "content": string}`;
  parseFails('{"messages": []}', badMsgs);
  parseFails('{"messages": [{"role": "user"}]}', badMsgs);
  parseFails('{"messages": [{"role": "user", "content": 3}]}', badMsgs);
  const empty = `${SRC}: no rows found (the file is empty); expected one JSON object per line with ${SHAPE_LIST}`;
  parseFails("", empty);
  parseFails("\n  \n", empty);
});

test("parseDataset jsonl: collects up to 10 errors and says how many more", () => {
  const content = Array.from({ length: 13 }, (_, i) => (i === 0 ? '{"text": "ok"}' : `{"bad${i}": 1}`)).join(
    "\n",
  );
  const lines = Array.from({ length: 10 }, (_, i) => `${SRC}:${i + 2}: ${SHAPES}; got keys ["bad${i + 1}"]`);
  parseFails(content, [...lines, "... and 2 more errors"].join("\n"));
  parseFails(content.split("\n").slice(0, 12).join("\n"), [...lines, "... and 1 more error"].join("\n"));
});

test("tokenizeRow with stories260K: text, prompt/completion, input_ids", (t) => {
  const dir = sharedData("stories260K-hf");
  if (!dir) return t.skip(SHARED_MISSING);
  const tok = loadTokenizer(dir);
  assert.deepEqual(tokenizeRow({ text: "Once upon a time" }, tok, { maskPrompt: true }), {
    ids: [1, 403, 407, 261, 378, 2],
    mask: [1, 1, 1, 1, 1, 1],
  });
  const pc = { prompt: "Once upon", completion: "a time" };
  assert.deepEqual(tokenizeRow(pc, tok, { maskPrompt: true }), {
    ids: [1, 403, 407, 261, 378, 2],
    mask: [0, 0, 0, 1, 1, 1],
    promptTokens: 3,
  });
  assert.deepEqual(tokenizeRow(pc, tok, { maskPrompt: false }).mask, [1, 1, 1, 1, 1, 1]);
  assert.deepEqual(tokenizeRow({ input_ids: [5, 6, 7] }, tok, { maskPrompt: true }), {
    ids: [5, 6, 7],
    mask: [1, 1, 1],
  });
  // No chat template: messages rows fail with the tokenizer's explanation.
  assert.throws(
    () => tokenizeRow({ messages: [{ role: "user", content: "hi" }] }, tok, { maskPrompt: false }),
    /no chat template/,
  );
});

test("tokenizeRow messages with the tiny-chat fixture: one BOS, assistant-only mask", () => {
  const tok = loadTokenizer(tinyDir);
  const messages = [
    { role: "system", content: "Be nice." },
    { role: "user", content: "hello" },
    { role: "assistant", content: "Hi user!" },
    { role: "user", content: "ok?" },
    { role: "assistant", content: "yes" },
  ];
  const rendered = tok.applyChatTemplate(messages);
  const { ids, mask } = tokenizeRow({ messages }, tok, { maskPrompt: true });
  assert.deepEqual(
    ids,
    tok.encode(rendered, { addSpecialTokens: false }),
    "the template's BOS is not doubled",
  );
  assert.equal(ids.filter((id) => id === 1).length, 1);
  assert.equal(ids[0], 1);
  const targets = ids.filter((_, i) => mask[i] === 1);
  // the end-of-turn token is a target; the newline the template writes after it is not
  assert.equal(tok.decode(targets), "Hi user!<|im_end|>yes<|im_end|>");
  // Each assistant span starts right after "<|im_start|>assistant\n".
  const firstTarget = mask.indexOf(1);
  assert.equal(tok.decode(ids.slice(0, firstTarget)).endsWith("<|im_start|>assistant\n"), true);
  assert.deepEqual(tokenizeRow({ messages }, tok, { maskPrompt: false }), { ids, mask: ids.map(() => 1) });

  // A template that doesn't emit BOS gets it from the tokenizer instead.
  const plain = { messages: [{ role: "user", content: "hello" }] };
  const noBos = Tokenizer.fromJSON({
    tokenizerJson: JSON.parse(readFileSync(join(tinyDir, "tokenizer.json"), "utf8")),
    tokenizerConfig: { bos_token: "<s>", chat_template: "{{ messages[0].content }}" },
  });
  assert.deepEqual(tokenizeRow(plain, noBos, { maskPrompt: false }).ids, [1, 88]);

  // A template whose generation prompt is not a prefix of the rendered answer cannot mask the prompt.
  const unstable = Tokenizer.fromJSON({
    tokenizerJson: JSON.parse(readFileSync(join(tinyDir, "tokenizer.json"), "utf8")),
    tokenizerConfig: {
      chat_template:
        "{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}GEN{% endif %}",
    },
  });
  const chat = { messages: [messages[1]!, messages[2]!] };
  assert.throws(
    () => tokenizeRow(chat, unstable, { maskPrompt: true }),
    /cannot mask the prompt: the chat template renders assistant message 2 .*train this data without --mask-prompt/,
  );
  assert.deepEqual(tokenizeRow(chat, unstable, { maskPrompt: false }).ids, unstable.encode("helloHi user!"));
});

test("readDataset: files, folders and their errors", () => {
  const dir = mkdtempSync(join(tmpdir(), "data-"));
  try {
    writeFileSync(join(dir, "a.txt"), "doc one\n\ndoc two\n");
    assert.deepEqual(readDataset(join(dir, "a.txt")), { train: [{ text: "doc one" }, { text: "doc two" }] });
    writeFileSync(join(dir, "b.jsonl"), '{"text": "x"}\n');
    assert.deepEqual(readDataset(join(dir, "b.jsonl")), { train: [{ text: "x" }] });
    writeFileSync(join(dir, "c.csv"), "text\nx\n");
    assert.throws(
      () => readDataset(join(dir, "c.csv")),
      /c\.csv: unsupported dataset file type "\.csv"; use a \.txt or \.jsonl/,
    );
    assert.throws(
      () => readDataset(join(dir, "nope.jsonl")),
      /dataset not found: .*nope\.jsonl does not exist/,
    );

    const folder = join(dir, "splits");
    mkdirSync(folder);
    writeFileSync(join(folder, "valid.jsonl"), '{"text": "v"}\n');
    writeFileSync(join(folder, "notes.md"), "hi");
    assert.throws(
      () => readDataset(folder),
      (e: Error) =>
        e.message.includes("must hold train.jsonl") && e.message.endsWith("it holds: notes.md, valid.jsonl"),
    );
    writeFileSync(join(folder, "train.jsonl"), '{"text": "t"}\n{"oops": 1}\n');
    assert.throws(
      () => readDataset(folder),
      (e: Error) => e.message.startsWith(`${join(folder, "train.jsonl")}:2: expected`),
    );
    writeFileSync(join(folder, "train.jsonl"), '{"text": "t"}\n');
    assert.deepEqual(readDataset(folder), { train: [{ text: "t" }], valid: [{ text: "v" }] });
    const empty = join(dir, "empty");
    mkdirSync(empty);
    assert.throws(() => readDataset(empty), /must hold train\.jsonl .*; it is empty/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
