/** The committed fine-tuning task (assets/task): splits parse with readDataset and share no row. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { readDataset } from "../../src/io/node/dataset-file.js";
import { repoRoot } from "../helpers.js";

test("task splits: train/valid/test parse, sizes, chunk lengths, no shared rows", () => {
  const splits = readDataset(join(repoRoot, "assets/task"));
  const texts = (rows: typeof splits.train | undefined) =>
    (rows ?? []).map((r) => {
      assert.ok("text" in r && typeof r.text === "string", "rows are {text}");
      return r.text;
    });
  const train = texts(splits.train);
  const valid = texts(splits.valid);
  const test_ = texts(splits.test);
  const chars = (rows: string[]) => rows.reduce((n, t) => n + t.length, 0);
  assert.ok(train.length >= 300 && chars(train) >= 400_000 && chars(train) <= 600_000, "train ~500 KB");
  for (const rows of [valid, test_]) {
    assert.ok(rows.length >= 40 && chars(rows) >= 30_000 && chars(rows) <= 60_000, "valid/test ~40 KB");
  }
  for (const t of [...train, ...valid, ...test_]) {
    assert.ok(t.length >= 300 && t.length <= 800, `chunk of ${t.length} chars`);
    assert.ok(!/\/[a-z$*+-]+( |$)/.test(t), `no POS tags left: ${t.slice(0, 60)}`);
    assert.ok(!t.includes("``") && !t.includes("''"), "quotes converted");
  }
  const seen = new Set<string>();
  for (const t of [...train, ...valid, ...test_]) {
    assert.ok(!seen.has(t), `row appears twice: ${t.slice(0, 60)}`);
    seen.add(t);
  }
});
