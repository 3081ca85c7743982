/** Training data: tokenizes dataset rows into ids plus a loss mask (pure). */
import type { DataRow } from "../io/dataset.js";
import type { ChatMessage, Tokenizer } from "../io/tokenizer.js";
import { SettingsError } from "./settings.js";

export type { DataRow } from "../io/dataset.js";

export type TokenizedRow = { ids: number[]; mask: number[] };
/** A tokenized row, and for a prompt/completion row the number of tokens of its prompt. */
export type TokenizedSource = TokenizedRow & { promptTokens?: number };

const ones = (n: number) => new Array<number>(n).fill(1);
const isPrefix = (a: number[], b: number[]) => a.length <= b.length && a.every((x, i) => x === b[i]);

export function tokenizeRow(
  row: DataRow,
  tokenizer: Tokenizer | null,
  { maskPrompt, templateVars = {} }: { maskPrompt: boolean; templateVars?: Record<string, unknown> },
): TokenizedSource {
  if ("input_ids" in row) return { ids: [...row.input_ids], mask: ones(row.input_ids.length) };
  if (!tokenizer) {
    throw new Error(
      'text rows need a tokenizer (tokenizer.json in the model folder); only {"input_ids"} rows work without one',
    );
  }
  const eos = tokenizer.eosIds.slice(0, 1);
  if ("messages" in row) return tokenizeMessages(row.messages, tokenizer, maskPrompt, templateVars);
  const withEos = (ids: number[]) =>
    ids.length > 0 && tokenizer.eosIds.includes(ids.at(-1)!) ? ids : [...ids, ...eos];
  if ("text" in row) {
    const ids = withEos(tokenizer.encode(row.text));
    return { ids, mask: ones(ids.length) };
  }
  const prompt = tokenizer.encode(row.prompt);
  const completion = withEos(tokenizer.encode(row.completion, { addSpecialTokens: false }));
  const mask = [...new Array<number>(prompt.length).fill(maskPrompt ? 0 : 1), ...ones(completion.length)];
  return { ids: [...prompt, ...completion], mask, promptTokens: prompt.length };
}

/**
 * Chat rows: the rendered conversation, with BOS from the tokenizer only when the template does not emit it.
 * With maskPrompt, the targets are each assistant turn's tokens, its end-of-turn token included and
 * nothing after it. A turn is found as the tokens between "the conversation up to it + the generation
 * prompt" and "the conversation through it", cut after the end-of-turn token (some templates append
 * the next header to every rendering). A template that renders earlier turns differently once later
 * ones follow (Qwen3 drops the reasoning of all but the last turns) is read by its generation prompt
 * instead: the k-th assistant turn starts after its k-th occurrence in the whole rendering.
 */
function tokenizeMessages(
  messages: ChatMessage[],
  tokenizer: Tokenizer,
  maskPrompt: boolean,
  vars: Record<string, unknown>,
): TokenizedRow {
  const render = (n: number, addGenerationPrompt: boolean) =>
    tokenizer.applyChatTemplate(messages.slice(0, n), { addGenerationPrompt, vars });
  const full = render(messages.length, false);
  const bos = tokenizer.bosToken;
  const addSpecialTokens = !(bos && full.startsWith(bos));
  const encode = (text: string) => tokenizer.encode(text, { addSpecialTokens });
  const ids = encode(full);
  if (!maskPrompt) return { ids, mask: ones(ids.length) };
  const turns = messages.flatMap((m, i) => (m.role === "assistant" ? [i] : []));
  const end = turnEnd(tokenizer, vars);
  const through = (from: number, within: number[]) => {
    const e = end === null ? -1 : within.indexOf(end, from);
    return e >= 0 ? e + 1 : within.length;
  };
  const mask = new Array<number>(ids.length).fill(0);
  const byPrefix = turns.every((i) => {
    const start = encode(render(i, true));
    const stop = encode(render(i + 1, false));
    const cut = stop.slice(0, through(start.length, stop));
    if (!isPrefix(start, cut) || !isPrefix(cut, ids)) return false;
    mask.fill(1, start.length, cut.length);
    return true;
  });
  if (byPrefix) return { ids, mask };

  mask.fill(0);
  const first = turns[0]!;
  const withPrompt = render(first, true);
  const without = render(first, false);
  const prompt = withPrompt.startsWith(without) ? withPrompt.slice(without.length) : "";
  let at = 0;
  for (const i of turns) {
    const c = prompt ? full.indexOf(prompt, at) : -1;
    const start = c >= 0 ? encode(full.slice(0, c + prompt.length)) : [];
    if (c < 0 || !isPrefix(start, ids) || end === null)
      throw new Error(
        `cannot mask the prompt: the chat template renders assistant message ${i + 1} in a way that cannot be told apart from the rest (it is not a prefix of the whole conversation, and its generation prompt does not mark it); train this data without --mask-prompt, or use a template that renders each turn the same (e.g. TRL's training templates) as chat_template.jinja`,
      );
    mask.fill(1, start.length, through(start.length, ids));
    at = c + prompt.length;
  }
  return { ids, mask };
}

/**
 * The token that ends an assistant turn (Llama 3's <|eot_id|>, ChatML's <|im_end|>): the first token
 * the template renders after an assistant message's content, or else the first EOS id; null if neither.
 */
function turnEnd(tokenizer: Tokenizer, vars: Record<string, unknown>): number | null {
  // the same for every row of a dataset: probed once per tokenizer and template variables
  const key = JSON.stringify(vars);
  const known = turnEnds.get(tokenizer) ?? new Map<string, number | null>();
  turnEnds.set(tokenizer, known);
  if (!known.has(key)) known.set(key, probeTurnEnd(tokenizer, vars));
  return known.get(key)!;
}
const turnEnds = new WeakMap<Tokenizer, Map<string, number | null>>();

function probeTurnEnd(tokenizer: Tokenizer, vars: Record<string, unknown>): number | null {
  const mark = "\u00a7\u00a7";
  try {
    const probe = tokenizer.applyChatTemplate(
      [
        { role: "user", content: "x" },
        { role: "assistant", content: mark },
      ],
      { vars },
    );
    const after = probe.slice(probe.lastIndexOf(mark) + mark.length);
    // a newline after the content is layout, not an end-of-turn token
    if (after !== "" && !/^\s/.test(after)) {
      const id = tokenizer.encode(after, { addSpecialTokens: false })[0];
      if (id !== undefined) return id;
    }
  } catch {
    // a template that needs other roles first: fall back to EOS
  }
  return tokenizer.eosIds[0] ?? null;
}

/**
 * Tokenizes rows; text rows need the tokenizer, pre-tokenised rows do not. A row longer than maxLen
 * is cut at its end, except a prompt/completion row whose completion fits: it loses the start of its
 * prompt instead (after a leading BOS), so what it teaches stays whole. Ids must lie in the vocabulary.
 */
export function tokenizeRows(
  rows: readonly DataRow[],
  tokenizer: Tokenizer | null,
  opts: {
    maskPrompt: boolean;
    maxLen: number;
    source: string;
    vocabSize?: number;
    /** Chat-template variables (a run's date_string, so that a resume renders the same text). */
    templateVars?: Record<string, unknown>;
  },
): { rows: TokenizedRow[]; truncated: number; promptCut: number } {
  let truncated = 0;
  let promptCut = 0;
  const out = rows.map((row, i) => {
    let t: TokenizedSource;
    try {
      t = tokenizeRow(row, tokenizer, { maskPrompt: opts.maskPrompt, templateVars: opts.templateVars });
    } catch (e) {
      throw new Error(`${opts.source}: row ${i + 1}: ${(e as Error).message}`);
    }
    const { vocabSize } = opts;
    if (vocabSize !== undefined) {
      const bad = t.ids.find((id) => id >= vocabSize);
      if (bad !== undefined)
        throw new SettingsError(
          `${opts.source}: row ${i + 1} has token id ${bad}, outside the model's vocabulary of ${vocabSize} (ids 0-${vocabSize - 1}); this data was tokenized for another model`,
        );
    }
    const over = t.ids.length - opts.maxLen;
    if (over <= 0) return { ids: t.ids, mask: t.mask };
    const head = tokenizer?.bosId != null && t.ids[0] === tokenizer.bosId ? 1 : 0;
    if (t.promptTokens !== undefined && t.promptTokens - head > over) {
      promptCut++;
      const cut = <A>(a: A[]) => [...a.slice(0, head), ...a.slice(head + over)];
      return { ids: cut(t.ids), mask: cut(t.mask) };
    }
    truncated++;
    return { ids: t.ids.slice(0, opts.maxLen), mask: t.mask.slice(0, opts.maxLen) };
  });
  return { rows: out, truncated, promptCut };
}

/** The longest sequence the model accepts (GPT-2 n_positions, Llama max_position_embeddings). */
export function contextLength(config: Record<string, unknown>): number {
  // a multimodal folder's text model has its own config (gemma3's text_config)
  const text = (config.text_config ?? {}) as Record<string, unknown>;
  const n = config.n_positions ?? config.max_position_embeddings ?? text.max_position_embeddings;
  return typeof n === "number" && n > 0 ? n : 2048;
}
