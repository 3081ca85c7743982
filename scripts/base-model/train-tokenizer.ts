/**
 * Trains the base model's byte-level BPE tokenizer on the corpus from corpus.ts and writes a Hugging Face
 * tokenizer.json + tokenizer_config.json.
 *
 *   node dist/scripts/base-model/train-tokenizer.js [--corpus build/base-corpus] [--out assets/base-model]
 *        [--vocab-size 4096]
 *
 * Trains on train.jsonl only; reports mean characters per token on valid.jsonl. Special tokens:
 * id 0 "<|endoftext|>" (BOS and EOS; the post-processor prepends it), id 1 "<|pad|>".
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadTokenizer } from "../../src/io/node/tokenizer-file.js";
import { countPieces, tokenizerJson, trainBpe } from "./bpe.js";

export const EOT = "<|endoftext|>";
export const PAD = "<|pad|>";
export const MODEL_MAX_LENGTH = 512;

const readTexts = (path: string): string[] =>
  readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l).text as string);

const { values } = parseArgs({
  options: {
    corpus: { type: "string", default: "build/base-corpus" },
    out: { type: "string", default: "assets/base-model" },
    "vocab-size": { type: "string", default: "4096" },
  },
});
const corpus = values.corpus!;
const out = values.out!;
const vocabSize = Number(values["vocab-size"]);
if (!Number.isInteger(vocabSize))
  throw new Error(`--vocab-size must be an integer, got ${values["vocab-size"]}`);
if (!existsSync(join(corpus, "train.jsonl"))) {
  throw new Error(`${corpus}/train.jsonl not found; build the corpus first: npm run data:corpus`);
}

const t0 = performance.now();
const counts = new Map<string, number>();
const train = readTexts(join(corpus, "train.jsonl"));
for (const text of train) countPieces(text, counts);
const t1 = performance.now();
console.log(
  `${train.length} rows, ${counts.size} distinct pieces, counted in ${((t1 - t0) / 1000).toFixed(1)} s`,
);
const model = trainBpe(counts, {
  vocabSize,
  specialTokens: [EOT, PAD],
  onProgress: (n) => {
    if (n % 500 === 0) console.log(`  ${n} merges, ${((performance.now() - t1) / 1000).toFixed(1)} s`);
  },
});
const t2 = performance.now();
console.log(
  `${model.merges.length} merges, vocab ${model.vocab.length}; trained in ${((t2 - t0) / 1000).toFixed(1)} s`,
);

mkdirSync(out, { recursive: true });
writeFileSync(join(out, "tokenizer.json"), `${JSON.stringify(tokenizerJson(model, { bosToken: EOT }))}\n`);
const added = (id: number, content: string) => [
  String(id),
  { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
];
const config = {
  add_prefix_space: false,
  added_tokens_decoder: Object.fromEntries([added(0, EOT), added(1, PAD)]),
  bos_token: EOT,
  clean_up_tokenization_spaces: false,
  eos_token: EOT,
  model_max_length: MODEL_MAX_LENGTH,
  pad_token: PAD,
  tokenizer_class: "PreTrainedTokenizerFast",
};
writeFileSync(join(out, "tokenizer_config.json"), `${JSON.stringify(config, null, 2)}\n`);
console.log(`wrote ${join(out, "tokenizer.json")} and ${join(out, "tokenizer_config.json")}`);

// Check: the written files load, and every validation row round-trips exactly.
const tok = loadTokenizer(out);
const validPath = join(corpus, "valid.jsonl");
if (existsSync(validPath)) {
  let chars = 0;
  let tokens = 0;
  for (const text of readTexts(validPath)) {
    const ids = tok.encode(text, { addSpecialTokens: false });
    if (tok.decode(ids) !== text) throw new Error(`round trip failed for: ${text.slice(0, 80)}...`);
    chars += text.length;
    tokens += ids.length;
  }
  console.log(
    `valid: ${tokens} tokens, ${chars} chars, ${(chars / tokens).toFixed(2)} chars/token (round trip exact)`,
  );
}
