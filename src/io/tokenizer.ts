/** Tokenizer: encode/decode, special ids and chat templates from parsed tokenizer.json + configs (browser-safe). */
import { Template } from "@huggingface/jinja";
import { Tokenizer as HFTokenizer } from "@huggingface/tokenizers";
import { InputError } from "./input-error.js";

export type ChatMessage = { role: string; content: string };
type Json = Record<string, unknown>;

/** The parsed contents of a model folder's tokenizer.json, tokenizer_config.json and generation_config.json. */
export interface TokenizerFiles {
  tokenizerJson: unknown;
  tokenizerConfig?: Json | null;
  generationConfig?: Json | null;
}

/** A special token in tokenizer_config.json: a string or an AddedToken object `{content: ...}`. */
function tokenString(v: unknown): string | null {
  if (typeof v === "string") return v;
  const content = v !== null && typeof v === "object" ? (v as Json).content : undefined;
  return typeof content === "string" ? content : null;
}

function idList(v: unknown): number[] {
  const list = Array.isArray(v) ? v : [v];
  return list.filter((x): x is number => Number.isSafeInteger(x) && x >= 0); // a token id, never -1
}

/** tokenizer_config `chat_template`: a string, or a list of {name, template} where "default" is used. */
function pickTemplate(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (!Array.isArray(v)) return null;
  const named = v.find((t) => t?.name === "default");
  return typeof named?.template === "string" ? named.template : null;
}

const isId = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;

/** The first token id in tokenizer.json that is not a non-negative integer (a vocab or added token), or null. */
function badTokenIds(json: Json): string | null {
  const vocab = (json.model as Json | null)?.vocab;
  const added = Array.isArray(json.added_tokens) ? json.added_tokens : [];
  const map =
    vocab !== null && typeof vocab === "object" && !Array.isArray(vocab) ? Object.entries(vocab) : [];
  // ids number the entries from 0, so none reaches their count: a stray id of 10^9 would make the
  // tokenizer build a table of 10^9 entries
  const entries = map.length + added.length + (Array.isArray(vocab) ? vocab.length : 0);
  const id = (v: unknown) => isId(v) && (v as number) < entries;
  for (const [token, v] of map)
    if (!id(v))
      return `model.vocab gives ${JSON.stringify(token)} the id ${JSON.stringify(v) ?? "undefined"}, not an integer from 0 to ${entries - 1} (its entries' count)`;
  for (const t of added)
    if (t === null || typeof t !== "object" || !id((t as Json).id) || typeof (t as Json).content !== "string")
      return `added_tokens holds ${JSON.stringify(t)?.slice(0, 80)}, not {"id": an integer from 0 to ${entries - 1}, "content": string}`;
  return null;
}

export class Tokenizer {
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly bosId: number | null;
  /** Ids that end generation: tokenizer_config eos_token first, then generation_config eos_token_id(s). */
  readonly eosIds: number[];
  readonly padId: number | null;
  /** One more than the largest token id, added tokens included. */
  readonly vocabSize: number;
  readonly chatTemplate: string | null;
  private template: Template | null = null;
  /** decode of one id in the vocabulary, by id (a pure function of it), with and without special tokens */
  private readonly single = [new Map<number, string>(), new Map<number, string>()] as const;
  /** Special-token strings the chat template sees (bos_token, eos_token, ...), like transformers passes them. */
  private readonly specialStrings: Record<string, unknown> = {};

  private constructor(
    private readonly hf: HFTokenizer,
    private readonly config: Json,
    generation: Json,
    /** The folder (or file) the tokenizer came from, named in errors. */
    readonly source: string,
  ) {
    for (const key of [
      "bos_token",
      "eos_token",
      "unk_token",
      "pad_token",
      "sep_token",
      "cls_token",
      "mask_token",
    ]) {
      const s = tokenString(config[key]);
      if (s !== null) this.specialStrings[key] = s;
    }
    if (config.additional_special_tokens)
      this.specialStrings.additional_special_tokens = config.additional_special_tokens;
    // A token tokenizer_config names (even as null) wins; generation_config is the fallback.
    const id = (key: string, fallback: unknown): number | null => {
      const s = tokenString(config[key]);
      if (s !== null) return hf.token_to_id(s) ?? null;
      return key in config ? null : (idList(fallback)[0] ?? null);
    };
    this.bosToken = tokenString(config.bos_token);
    this.eosToken = tokenString(config.eos_token);
    this.bosId = id("bos_token", generation.bos_token_id);
    this.padId = id("pad_token", generation.pad_token_id);
    const eos = this.eosToken === null ? undefined : hf.token_to_id(this.eosToken);
    this.eosIds = [...new Set([...(eos === undefined ? [] : [eos]), ...idList(generation.eos_token_id)])];
    let maxId = -1; // (no Math.max(...ids): a 150k-entry spread overflows the stack)
    for (const i of hf.get_vocab(true).values()) maxId = Math.max(maxId, i);
    this.vocabSize = maxId + 1;
    this.chatTemplate = pickTemplate(config.chat_template);
  }

  /** A tokenizer from its parsed files; `source` (the folder they came from) is named in errors. */
  static fromJSON(
    { tokenizerJson, tokenizerConfig, generationConfig }: TokenizerFiles,
    source = "tokenizer.json",
  ): Tokenizer {
    if (tokenizerJson === null || typeof tokenizerJson !== "object" || !("model" in tokenizerJson)) {
      throw new InputError(source, 'tokenizer.json: expected an object with a "model" entry');
    }
    const bad = badTokenIds(tokenizerJson as Json);
    if (bad)
      throw new InputError(source, `tokenizer.json: ${bad}; re-save it with transformers' save_pretrained`);
    // tokenizers.js insists on these keys being present (null is fine); files saved by HF always have them.
    const json = {
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      added_tokens: [],
      ...tokenizerJson,
    };
    const config: Json = { ...(tokenizerConfig ?? {}) };
    // tokenizers.js reads special tokens as plain strings; modern transformers defaults clean-up to off.
    for (const key of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
      if (key in config) config[key] = tokenString(config[key]);
    }
    if (Array.isArray(config.additional_special_tokens)) {
      config.additional_special_tokens = config.additional_special_tokens
        .map(tokenString)
        .filter((s) => s !== null);
    }
    config.clean_up_tokenization_spaces ??= false;
    try {
      return new Tokenizer(new HFTokenizer(json, config), config, generationConfig ?? {}, source);
    } catch (e) {
      // tokenizers.js (and our reading of the special tokens) throws TypeErrors on malformed entries
      const why =
        e instanceof TypeError || e instanceof RangeError ? "an entry is malformed" : (e as Error).message;
      throw new InputError(
        source,
        `tokenizer.json / tokenizer_config.json cannot be read as a tokenizer (${why}); re-save them with transformers' save_pretrained (--debug shows where it failed)`,
        { cause: e },
      );
    }
  }

  /**
   * Token ids of `text`. With special tokens (the default) this follows transformers: explicit
   * add_bos_token / add_eos_token in tokenizer_config decide BOS/EOS, else tokenizer.json's post-processor.
   */
  encode(text: string, { addSpecialTokens = true }: { addSpecialTokens?: boolean } = {}): number[] {
    const { add_bos_token: addBos, add_eos_token: addEos } = this.config;
    const flags = typeof addBos === "boolean" || typeof addEos === "boolean";
    const ids = this.malformed(
      () => this.hf.encode(text, { add_special_tokens: addSpecialTokens && !flags }).ids,
    );
    if (!addSpecialTokens || !flags) return ids;
    const bos = addBos === true && this.bosId !== null ? [this.bosId] : [];
    const eos = addEos === true && this.eosIds.length > 0 ? [this.eosIds[0]!] : [];
    return [...bos, ...ids, ...eos];
  }

  /** Text of `ids`; ids outside the vocabulary are dropped (as HF's Rust tokenizers does). */
  decode(ids: number[], { skipSpecialTokens = false }: { skipSpecialTokens?: boolean } = {}): string {
    // one id (a stream decoder's every other call) from a cache: a streamed token 3.0 -> 2.6 us (stories260K)
    const cache = ids.length === 1 ? this.single[skipSpecialTokens ? 1 : 0] : null;
    const kept = cache?.get(ids[0]!);
    if (kept !== undefined) return kept;
    const known = ids.filter((id) => this.hf.id_to_token(id) !== undefined);
    if (known.length === 0) return ""; // tokenizers.js throws on an empty list
    const text = this.malformed(() => this.hf.decode(known, { skip_special_tokens: skipSpecialTokens }));
    if (cache && known.length === 1) cache.set(known[0]!, text); // only ids in the vocabulary: bounded
    return text;
  }

  // tokenizers.js builds its normalizer, pre-tokenizer, post-processor and decoder lazily: a malformed
  // one throws a TypeError at the first encode or decode, which is said here as the file's problem
  private malformed<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      if (!(e instanceof TypeError || e instanceof RangeError)) throw e;
      throw new InputError(
        this.source,
        "tokenizer.json has a malformed entry (its normalizer, pre_tokenizer, post_processor or decoder); re-save it with transformers' save_pretrained (--debug shows where it failed)",
        { cause: e },
      );
    }
  }

  /**
   * Renders `messages` with the model's chat template, passing special tokens, add_generation_prompt and
   * any template variables (`vars`, e.g. Qwen3's enable_thinking), as transformers' apply_chat_template.
   * No strftime_now is defined, so a template that asks for today's date takes its own fallback and a
   * dataset renders the same on every day (transformers passes the current date).
   */
  applyChatTemplate(
    messages: ChatMessage[],
    {
      addGenerationPrompt = false,
      vars = {},
    }: { addGenerationPrompt?: boolean; vars?: Record<string, unknown> } = {},
  ): string {
    if (this.chatTemplate === null) {
      throw new Error(
        "this model has no chat template (no chat_template in tokenizer_config.json); " +
          "pass a plain prompt instead, or use a model that has a chat template",
      );
    }
    // @huggingface/jinja is an interpreter with its own sandbox: a template sees only what is passed
    // here, and reaches no JavaScript object, function or global of the host
    try {
      this.template ??= new Template(this.chatTemplate);
      return this.template.render({
        ...this.specialStrings,
        ...vars,
        messages,
        add_generation_prompt: addGenerationPrompt,
      });
    } catch (e) {
      // the Jinja parser's own TypeErrors (a template cut short) say nothing a user can act on
      const why =
        e instanceof TypeError || e instanceof RangeError
          ? "it is malformed (the Jinja parser could not read it)"
          : (e as Error).message;
      throw new InputError(
        this.source,
        `the chat_template (tokenizer_config.json or chat_template.jinja) failed: ${why}; fix the template or re-download the file`,
        { cause: e },
      );
    }
  }
}

export interface StreamDecoder {
  /** Adds one id; returns the text that became printable (possibly ""). */
  push(id: number): string;
  /** Returns whatever is still held back (e.g. an incomplete UTF-8 sequence). */
  flush(): string;
}

/**
 * Incremental decoding for streaming output. It decodes a window of recent ids and emits only the new
 * suffix, holding text that ends in U+FFFD (a partial byte-fallback character) until it completes.
 * `context` ids (e.g. the prompt) are decoded as left context but never emitted, so a first generated
 * token like "▁there" keeps its leading space.
 */
export function createStreamDecoder(
  tokenizer: Tokenizer,
  { context = [], skipSpecialTokens = false }: { context?: number[]; skipSpecialTokens?: boolean } = {},
): StreamDecoder {
  const ids = [...context];
  let start = 0; // the window: ids[start, shown) were already emitted, ids[shown, ...) not yet
  let shown = ids.length;
  const text = (end: number) => tokenizer.decode(ids.slice(start, end), { skipSpecialTokens });
  const emit = (force: boolean): string => {
    const before = text(shown);
    const now = text(ids.length);
    if (now.length <= before.length || (!force && now.endsWith("\uFFFD"))) return "";
    start = shown;
    shown = ids.length;
    return now.slice(before.length);
  };
  return {
    push(id) {
      ids.push(id);
      return emit(false);
    },
    flush: () => emit(true),
  };
}
