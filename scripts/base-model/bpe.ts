/**
 * Byte-level BPE in plain TypeScript, compatible with Hugging Face `tokenizers` (GPT-2 style):
 * text is split with GPT-2's pre-tokenisation regex, each piece's UTF-8 bytes are mapped to printable
 * characters (GPT-2's bytes_to_unicode), and merges are learned inside pieces only.
 *
 * Training counts the pieces once, then merges over the distinct pieces weighted by their counts,
 * keeping pair counts up to date incrementally (only pieces that contain the merged pair are touched).
 * Ties between equally frequent pairs go to the pair with the smaller (left id, right id), so a run is
 * deterministic. No node:fs here: the file-writing lives in train-tokenizer.ts.
 */

/** GPT-2's pre-tokenisation regex, exactly as tokenizers' ByteLevel pre-tokenizer (use_regex) applies it. */
export const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's bytes_to_unicode: byte value → a printable character standing for it. */
export function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    map[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  }
  return map;
}

const BYTE_CHARS = bytesToUnicode();
const encoder = new TextEncoder();

/** The byte-level form of one pre-tokenised piece (each UTF-8 byte as its printable stand-in). */
export function byteLevel(piece: string): string {
  let out = "";
  for (const b of encoder.encode(piece)) out += BYTE_CHARS[b];
  return out;
}

/** Adds the pre-tokenised pieces of `text` to `counts` (keyed by their byte-level form). */
export function countPieces(text: string, counts: Map<string, number>): void {
  for (const piece of text.match(GPT2_PATTERN) ?? []) {
    const key = byteLevel(piece);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
}

export interface BpeOptions {
  /** Total vocabulary size, special tokens and the 256 byte tokens included. */
  vocabSize: number;
  /** Added at ids 0, 1, ... before the byte tokens. */
  specialTokens?: string[];
  /** Stop early when the most frequent pair occurs fewer times than this (default 2). */
  minFrequency?: number;
  /** Called every `every` merges with the merge count so far. */
  onProgress?: (merges: number) => void;
}

export interface BpeModel {
  /** Token strings by id: special tokens, the 256 bytes (in byte order), then one token per merge. */
  vocab: string[];
  /** Merges in the order learned, as [left, right] token strings. */
  merges: [string, string][];
  specialTokens: string[];
}

const SHIFT = 65536; // pair key = left * SHIFT + right; ids stay below SHIFT

/** Learns byte-level BPE merges from piece counts (see countPieces). */
export function trainBpe(pieceCounts: Map<string, number>, options: BpeOptions): BpeModel {
  const specialTokens = options.specialTokens ?? [];
  const minFrequency = options.minFrequency ?? 2;
  if (options.vocabSize >= SHIFT) throw new Error(`vocabSize must be below ${SHIFT}`);
  const vocab = [...specialTokens, ...BYTE_CHARS];
  if (options.vocabSize < vocab.length) {
    throw new Error(`vocabSize ${options.vocabSize} is below the ${vocab.length} special and byte tokens`);
  }
  const byteId = new Map(BYTE_CHARS.map((c, b) => [c, specialTokens.length + b]));

  // Distinct pieces in a fixed order (sorted), so the where-sets and the result never depend on input order.
  const keys = [...pieceCounts.keys()].sort();
  const words: number[][] = keys.map((k) => Array.from(k, (c) => byteId.get(c)!));
  const counts = keys.map((k) => pieceCounts.get(k)!);

  const pairCounts = new Map<number, number>();
  const where = new Map<number, Set<number>>();
  const addPairs = (w: number, sign: 1 | -1) => {
    const s = words[w]!;
    const c = counts[w]! * sign;
    for (let i = 0; i + 1 < s.length; i++) {
      const key = s[i]! * SHIFT + s[i + 1]!;
      const n = (pairCounts.get(key) ?? 0) + c;
      if (n === 0) pairCounts.delete(key);
      else pairCounts.set(key, n);
      if (sign > 0) {
        let set = where.get(key);
        if (!set) where.set(key, (set = new Set()));
        set.add(w);
      }
    }
  };
  for (let w = 0; w < words.length; w++) addPairs(w, 1);

  const merges: [string, string][] = [];
  while (vocab.length < options.vocabSize) {
    let best = -1;
    let bestCount = 0;
    for (const [key, n] of pairCounts) {
      if (n > bestCount || (n === bestCount && key < best)) {
        best = key;
        bestCount = n;
      }
    }
    if (best < 0 || bestCount < minFrequency) break;
    const a = Math.floor(best / SHIFT);
    const b = best % SHIFT;
    const id = vocab.length;
    vocab.push(vocab[a]! + vocab[b]!);
    merges.push([vocab[a]!, vocab[b]!]);
    for (const w of [...(where.get(best) ?? [])]) {
      const s = words[w]!;
      let found = false;
      for (let i = 0; i + 1 < s.length; i++) {
        if (s[i] === a && s[i + 1] === b) {
          found = true;
          break;
        }
      }
      if (!found) continue; // a stale entry: an earlier merge already took this pair apart
      addPairs(w, -1);
      const next: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          next.push(id);
          i++;
        } else next.push(s[i]!);
      }
      words[w] = next;
      addPairs(w, 1);
    }
    where.delete(best);
    options.onProgress?.(merges.length);
  }
  return { vocab, merges, specialTokens };
}

export interface TokenizerJsonOptions {
  /** Prepended by the post-processor when special tokens are added (e.g. "<|endoftext|>"); null for none. */
  bosToken: string | null;
}

/** A Hugging Face tokenizer.json for a trained byte-level BPE model. */
export function tokenizerJson(model: BpeModel, { bosToken }: TokenizerJsonOptions): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  model.vocab.forEach((token, id) => {
    vocab[token] = id;
  });
  const addedTokens = model.specialTokens.map((content, id) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const byteLevel = { add_prefix_space: false, trim_offsets: true, use_regex: true };
  let postProcessor: Record<string, unknown> = { type: "ByteLevel", ...byteLevel, trim_offsets: false };
  if (bosToken !== null) {
    const id = model.vocab.indexOf(bosToken);
    if (id < 0) throw new Error(`bos token ${bosToken} is not in the vocabulary`);
    const bos = { SpecialToken: { id: bosToken, type_id: 0 } };
    postProcessor = {
      type: "TemplateProcessing",
      single: [bos, { Sequence: { id: "A", type_id: 0 } }],
      pair: [bos, { Sequence: { id: "A", type_id: 0 } }, bos, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { [bosToken]: { id: bosToken, ids: [id], tokens: [bosToken] } },
    };
  }
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", ...byteLevel },
    post_processor: postProcessor,
    decoder: { type: "ByteLevel", ...byteLevel },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: model.merges.map(([l, r]) => `${l} ${r}`),
    },
  };
}
