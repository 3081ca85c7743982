/**
 * Fuzzing the dataset reader (io/dataset.ts): JSONL and text files built from rows of every shape,
 * then damaged (truncated, bit-flipped, invalid UTF-8, rows of hostile values, deep nesting, CRLF).
 * Each case gives rows or an error naming the file; rows that parse are written again as JSONL and
 * read back the same.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { type DataRow, parseDataset } from "../../src/io/dataset.js";
import { asText, checkCase, count, deepText, hostileJson, mutateBytes, params, report } from "./harness.js";

const SRC = "fuzz/train.jsonl";
const enc = new TextEncoder();

const row = fc.oneof(
  fc.record({ text: fc.string() }),
  fc.record({ prompt: fc.string(), completion: fc.string() }),
  fc.record({
    messages: fc.array(
      fc.record({ role: fc.constantFrom("user", "assistant", "system"), content: fc.string() }),
      { minLength: 1, maxLength: 3 },
    ),
  }),
  fc.record({ input_ids: fc.array(fc.nat(2 ** 31 - 1), { minLength: 1, maxLength: 8 }) }),
  // the right keys holding hostile values, or none of them
  fc.record({ text: hostileJson }),
  fc.record({ input_ids: hostileJson }),
  fc.record({ messages: hostileJson }),
  fc.record({ prompt: hostileJson, completion: fc.string() }),
  hostileJson,
);
const line = fc.oneof(
  { weight: 8, arbitrary: row.map((r) => JSON.stringify(r) ?? "null") },
  { weight: 1, arbitrary: fc.nat(5_000).map((d) => `{"text": ${deepText(d)}}`) },
  { weight: 1, arbitrary: fc.string() },
);
const file = fc
  .tuple(fc.array(line, { maxLength: 12 }), fc.constantFrom("\n", "\r\n", "\n\n"))
  .map(([lines, nl]) => enc.encode(lines.join(nl)));
const damaged = fc.oneof(
  file,
  file.chain((b) => mutateBytes(b)),
);

/** Rows as a JSONL text, one object per line. */
const jsonl = (rows: DataRow[]) => rows.map((r) => JSON.stringify(r)).join("\n");

describe("fuzz: datasets", () => {
  it("JSONL: rows of every shape, or an error naming the file and line; rows round-trip", () => {
    fc.assert(
      fc.property(damaged, (bytes) => {
        count("dataset");
        const r = checkCase(() => parseDataset(asText(bytes, SRC), SRC, "jsonl"), {
          source: SRC,
          inputBytes: bytes.length,
          allocFactor: 64,
        });
        if (!r.ok) return;
        assert.ok(r.value.length > 0);
        assert.deepEqual(parseDataset(jsonl(r.value), "again", "jsonl"), r.value, "JSONL round trip");
      }),
      params(800),
    );
  });

  it("text files: documents, or an error naming the file; documents round-trip", () => {
    fc.assert(
      fc.property(damaged, (bytes) => {
        count("dataset");
        const r = checkCase(() => parseDataset(asText(bytes, SRC), SRC, "txt"), {
          source: SRC,
          inputBytes: bytes.length,
          allocFactor: 64,
        });
        if (!r.ok) return;
        const text = r.value.map((d) => (d as { text: string }).text).join("\n\n");
        assert.deepEqual(parseDataset(text, "again", "txt"), r.value, "text round trip");
      }),
      params(800),
    );
    report("dataset");
  });
});
