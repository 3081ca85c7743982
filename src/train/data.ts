/** Training data: tokenizes dataset rows into ids plus a loss mask (pure). */
import type { DataRow } from "../io/dataset.js";
import type { ChatMessage, Tokenizer } from "../io/tokenizer.js";

export type { DataRow } from "../io/dataset.js";

export type TokenizedRow = { ids: number[]; mask: number[] };
/** A tokenized row, and for a prompt/completion row the number of tokens of its prompt. */
export type TokenizedSource = TokenizedRow & { promptTokens?: number };

const ones = (n: number) => new Array<number>(n).fill(1);
const isPrefix = (a: number[], b: number[]) => a.length <= b.length && a.every((x, i) => x === b[i]);

export function tokenizeRow(
  row: DataRow,
  tokenizer: Tokenizer | null,
  { maskPrompt }: { maskPrompt: boolean },
): TokenizedSource {
  if ("input_ids" in row) return { ids: [...row.input_ids], mask: ones(row.input_ids.length) };
  if (!tokenizer) {
    throw new Error(
      'text rows need a tokenizer (tokenizer.json in the model folder); only {"input_ids"} rows work without one',
    );
  }
  const eos = tokenizer.eosIds.slice(0, 1);
  if ("messages" in row) return tokenizeMessages(row.messages, tokenizer, maskPrompt);
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
 * With maskPrompt, targets are the tokens between "conversation up to assistant turn i + generation prompt"
 * and "conversation through turn i", for each assistant turn.
 */
function tokenizeMessages(messages: ChatMessage[], tokenizer: Tokenizer, maskPrompt: boolean): TokenizedRow {
  const render = (n: number, addGenerationPrompt: boolean) =>
    tokenizer.applyChatTemplate(messages.slice(0, n), { addGenerationPrompt });
  const full = render(messages.length, false);
  const bos = tokenizer.bosToken;
  const addSpecialTokens = !(bos && full.startsWith(bos));
  const encode = (text: string) => tokenizer.encode(text, { addSpecialTokens });
  const ids = encode(full);
  if (!maskPrompt) return { ids, mask: ones(ids.length) };
  const mask = new Array<number>(ids.length).fill(0);
  messages.forEach((m, i) => {
    if (m.role !== "assistant") return;
    const start = encode(render(i, true));
    const end = encode(render(i + 1, false));
    if (!isPrefix(start, end) || !isPrefix(end, ids)) {
      throw new Error(
        `cannot mask the prompt: the chat template does not render the conversation up to message ${i + 1} ` +
          "(assistant) as a prefix of the whole conversation; train this data without prompt masking",
      );
    }
    mask.fill(1, start.length, end.length);
  });
  return { ids, mask };
}
