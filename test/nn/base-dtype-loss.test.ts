/** The --base-dtype promise: bf16 and f16 base weights keep held-out loss within 0.5% of f32, on real models. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { readDataset } from "../../src/io/node/dataset-file.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { loadTokenizer } from "../../src/io/node/tokenizer-file.js";
import type { BaseDType } from "../../src/nn/base-dtype.js";
import { type TokenizedRow, tokenizeRow } from "../../src/train/data.js";
import { evaluate } from "../../src/train/evaluate.js";
import { repoRoot, SHARED_MISSING, sharedData } from "../helpers.js";

/** The bound: a 16-bit base may cost at most 0.5% of held-out loss. */
const MAX_REL = 0.005;

function checkLosses(dir: string, rows: TokenizedRow[]): void {
  const loss = (baseDtype: BaseDType) => evaluate(loadModelFolder(dir, { baseDtype }).model, rows).loss;
  const f32 = loss("f32");
  for (const dtype of ["bf16", "f16"] as const) {
    const rel = Math.abs(loss(dtype) - f32) / f32;
    assert.ok(rel <= MAX_REL, `${dtype}: held-out loss differs from f32 by ${(rel * 100).toFixed(3)}%`);
  }
}

describe("held-out loss with a 16-bit base", () => {
  it("embedded model, assets/task valid split: bf16 and f16 within 0.5% of f32", () => {
    const dir = join(repoRoot, "assets/base-model");
    const tok = loadTokenizer(dir);
    const rows = readDataset(join(repoRoot, "assets/task"))
      .valid!.map((r) => tokenizeRow(r, tok, { maskPrompt: false }))
      .filter((r) => r.ids.length > 1);
    checkLosses(dir, rows);
  });

  it("stories260K, TinyStories validation text: bf16 and f16 within 0.5% of f32", (t) => {
    const dir = sharedData("stories260K-hf");
    const text = sharedData("tinystories-val-sample/tinystories_val.txt");
    if (!dir || !text) return t.skip(SHARED_MISSING);
    const tok = loadTokenizer(dir);
    const docs = readFileSync(text, "utf8")
      .split(/\n\s*\n/)
      .filter((d) => d.trim().length > 0);
    const rows = docs.slice(-40).map((d) => {
      const ids = tok.encode(d.trim()).slice(0, 256);
      return { ids, mask: ids.map(() => 1) };
    });
    checkLosses(dir, rows);
  });
});
