/**
 * The tokenizer of a GGUF model, rebuilt from its `tokenizer.ggml.*` metadata as the files of a Hugging
 * Face tokenizer (tokenizer.json, tokenizer_config.json, generation_config.json) that `Tokenizer.fromJSON`
 * reads and `lora merge` writes. It follows transformers' GGUF converters (integrations/ggml.py) and
 * llama.cpp's vocabulary rules:
 * - model "llama" (SentencePiece): a BPE with byte fallback over `tokens`, with merges rebuilt from
 *   `scores` as transformers' GGUFTokenizerSkeleton does (every split of a token into two tokens, the
 *   merged token's score first); normalizer Prepend("▁") (unless `add_space_prefix` is false) and
 *   Replace(" ", "▁"); the decoder undoes both.
 * - model "gpt2" (byte-level BPE): `tokens` and `merges` ("a b"), with the pre-tokenizer `tokenizer.ggml.pre`
 *   names: GPT-2's ("gpt-2", "default" or absent), Qwen2's ("qwen2", NFC first) or Llama 3's ("llama-bpe",
 *   merges ignored for whole-word tokens). Other pre-tokenizers are refused by name: a wrong split would
 *   give other ids silently.
 * Tokens of type CONTROL (3) and UNKNOWN (2) become special added tokens, USER_DEFINED (4) plain added
 * tokens. BOS/EOS/UNK/PAD come from the `*_token_id` keys; `add_bos_token` defaults as llama.cpp does
 * (true for "llama", false for "gpt2"); `tokenizer.chat_template` is the chat template.
 */
import { GGUFError, type GGUFHeader, ggufArray, ggufBool, ggufNumber, ggufString } from "./gguf.js";
import type { TokenizerFiles } from "./tokenizer.js";

const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

// Split patterns of the byte-level pre-tokenizers (as their tokenizer.json files write them).
const QWEN2_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const BYTE_LEVEL_PRE = {
  gpt2: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
  split: (pattern: string) => ({
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
    ],
  }),
};
const KNOWN_PRE = ["gpt-2", "default", "qwen2", "llama-bpe"];

/** SentencePiece merges from scores, as transformers' GGUFTokenizerSkeleton builds them. */
function mergesFromScores(tokens: string[], scores: number[]): [string, string][] {
  const score = new Map<string, number>();
  for (let i = 0; i < tokens.length; i++) if (!score.has(tokens[i]!)) score.set(tokens[i]!, scores[i]!);
  const merges: [string, string, number][] = [];
  for (const [piece, pieceScore] of score) {
    const chars = Array.from(piece); // split by code point, as Python slices a str
    const local: [string, string, number][] = [];
    for (let k = 1; k < chars.length; k++) {
      const l = chars.slice(0, k).join("");
      const r = chars.slice(k).join("");
      if (score.has(l) && score.has(r)) local.push([l, r, pieceScore]);
    }
    local.sort((a, b) => score.get(b[0])! - score.get(a[0])! || score.get(b[1])! - score.get(a[1])!);
    merges.push(...local);
  }
  merges.sort((a, b) => b[2] - a[2]);
  return merges.map(([l, r]) => [l, r]);
}

/**
 * The Hugging Face tokenizer files of a GGUF file's tokenizer metadata. Throws GGUFError (naming
 * `source`) when the metadata is missing, inconsistent, or of a tokenizer model not handled here.
 */
export function ggufTokenizerFiles(h: GGUFHeader, source: string): TokenizerFiles {
  const fail = (problem: string): never => {
    throw new GGUFError(source, problem);
  };
  const model = ggufString(h, "tokenizer.ggml.model", source);
  if (model === undefined)
    fail("it has no tokenizer (no tokenizer.ggml.model); pass --tokenizer DIR with a tokenizer.json");
  if (model !== "llama" && model !== "gpt2")
    fail(
      `tokenizer.ggml.model ${JSON.stringify(model)} is not supported (supported: "llama" (SentencePiece), "gpt2" (byte-level BPE))`,
    );
  const tokens = ggufArray(h, "tokenizer.ggml.tokens", source) ?? fail("it has no tokenizer.ggml.tokens");
  if (!tokens.every((t) => typeof t === "string")) fail("tokenizer.ggml.tokens must be an array of strings");
  const n = tokens.length;
  const numbers = (key: string): number[] | undefined => {
    const a = ggufArray(h, key, source);
    if (a === undefined) return undefined;
    if (a.length !== n) fail(`${key} has ${a.length} entries for ${n} tokens`);
    if (!a.every((x) => typeof x === "number")) fail(`${key} must be an array of numbers`);
    return a as number[];
  };
  const scores = numbers("tokenizer.ggml.scores");
  const types = numbers("tokenizer.ggml.token_type");
  const id = (key: string): number | null => {
    const v = ggufNumber(h, key, source);
    // llama.cpp writes -1 (as u32 4294967295) for "none"
    return v === undefined || v < 0 || v >= n || !Number.isInteger(v) ? null : v;
  };
  const tok = tokens as string[];
  const bos = id("tokenizer.ggml.bos_token_id");
  const eos = id("tokenizer.ggml.eos_token_id");
  const eot = id("tokenizer.ggml.eot_token_id");
  const unk = id("tokenizer.ggml.unknown_token_id");
  const pad = id("tokenizer.ggml.padding_token_id");

  const vocab: Record<string, number> = {};
  for (let i = 0; i < n; i++) if (!Object.hasOwn(vocab, tok[i]!)) vocab[tok[i]!] = i;
  const added: Record<string, unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const t = types?.[i];
    const special = t === TOKEN_TYPE.CONTROL || t === TOKEN_TYPE.UNKNOWN;
    if (!special && t !== TOKEN_TYPE.USER_DEFINED) continue;
    added.push({
      id: i,
      content: tok[i],
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special,
    });
  }

  let tokenizerJson: Record<string, unknown>;
  if (model === "llama") {
    if (!scores) fail("a SentencePiece (llama) tokenizer needs tokenizer.ggml.scores");
    const addSpace = ggufBool(h, "tokenizer.ggml.add_space_prefix", source) ?? true;
    const replace = { type: "Replace", pattern: { String: " " }, content: "▁" };
    tokenizerJson = {
      version: "1.0",
      added_tokens: added,
      normalizer: addSpace
        ? { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, replace] }
        : replace,
      pre_tokenizer: null,
      post_processor: null,
      decoder: {
        type: "Sequence",
        decoders: [
          { type: "Replace", pattern: { String: "▁" }, content: " " },
          { type: "ByteFallback" },
          { type: "Fuse" },
          ...(addSpace ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : []),
        ],
      },
      model: {
        type: "BPE",
        dropout: null,
        unk_token: unk === null ? null : tok[unk],
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: true,
        byte_fallback: true,
        ignore_merges: false,
        vocab,
        merges: mergesFromScores(tok, scores!),
      },
    };
  } else {
    const pre = ggufString(h, "tokenizer.ggml.pre", source) ?? "default";
    if (!KNOWN_PRE.includes(pre))
      fail(
        `tokenizer.ggml.pre ${JSON.stringify(pre)} is not supported (supported: ${KNOWN_PRE.join(", ")}); pass --tokenizer DIR with the model's tokenizer.json`,
      );
    const raw =
      ggufArray(h, "tokenizer.ggml.merges", source) ?? fail("a gpt2 tokenizer needs tokenizer.ggml.merges");
    const merges = raw.map((m, i) => {
      const parts = typeof m === "string" ? m.split(" ") : [];
      if (parts.length !== 2) fail(`tokenizer.ggml.merges[${i}] is not two tokens separated by one space`);
      return parts as [string, string];
    });
    const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };
    tokenizerJson = {
      version: "1.0",
      added_tokens: added,
      normalizer: pre === "qwen2" ? { type: "NFC" } : null,
      pre_tokenizer:
        pre === "qwen2"
          ? BYTE_LEVEL_PRE.split(QWEN2_SPLIT)
          : pre === "llama-bpe"
            ? BYTE_LEVEL_PRE.split(LLAMA3_SPLIT)
            : BYTE_LEVEL_PRE.gpt2,
      post_processor: null,
      decoder: byteLevel,
      model: {
        type: "BPE",
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: "",
        end_of_word_suffix: "",
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: pre === "llama-bpe",
        vocab,
        merges,
      },
    };
  }

  const addBos = ggufBool(h, "tokenizer.ggml.add_bos_token", source) ?? model === "llama";
  const addEos = ggufBool(h, "tokenizer.ggml.add_eos_token", source) ?? false;
  const tokenizerConfig: Record<string, unknown> = {
    add_bos_token: addBos,
    add_eos_token: addEos,
    bos_token: bos === null ? null : tok[bos],
    eos_token: eos === null ? null : tok[eos],
    unk_token: unk === null ? null : tok[unk],
    pad_token: pad === null ? null : tok[pad],
    clean_up_tokenization_spaces: false,
  };
  const template = ggufString(h, "tokenizer.chat_template", source);
  if (template !== undefined) tokenizerConfig.chat_template = template;
  const eosIds = [...new Set([eos, eot].filter((x): x is number => x !== null))];
  const generationConfig: Record<string, unknown> = {};
  if (bos !== null) generationConfig.bos_token_id = bos;
  if (eosIds.length) generationConfig.eos_token_id = eosIds.length === 1 ? eosIds[0] : eosIds;
  if (pad !== null) generationConfig.pad_token_id = pad;
  return { tokenizerJson, tokenizerConfig, generationConfig };
}
