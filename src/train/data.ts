/** Training data: parses .txt / .jsonl dataset text into rows and tokenizes rows into ids + loss mask (pure). */
import type { ChatMessage, Tokenizer } from "../io/tokenizer.js";

export type DataRow =
  | { text: string }
  | { prompt: string; completion: string }
  | { messages: ChatMessage[] }
  | { input_ids: number[] };

const SHAPES = '"text", "prompt"+"completion", "messages" or "input_ids"';
const MAX_ERRORS = 10;

const typeName = (v: unknown) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);

/** One parsed JSONL value to a row, or a description of what is wrong with it. */
function toRow(v: unknown): DataRow | string {
  if (typeName(v) !== "object") return `expected a JSON object; got ${typeName(v)}`;
  const o = v as Record<string, unknown>;
  if ("input_ids" in o) {
    const ids = o.input_ids;
    const ok = Array.isArray(ids) && ids.length > 0 && ids.every((x) => Number.isInteger(x) && x >= 0);
    return ok
      ? { input_ids: ids as number[] }
      : '"input_ids" must be a non-empty array of non-negative integers';
  }
  if ("messages" in o) {
    const msgs = o.messages;
    const isMsg = (m: unknown) =>
      typeName(m) === "object" &&
      typeof (m as ChatMessage).role === "string" &&
      typeof (m as ChatMessage).content === "string";
    if (!Array.isArray(msgs) || msgs.length === 0 || !msgs.every(isMsg)) {
      return '"messages" must be a non-empty array of {"role": string, "content": string}';
    }
    return { messages: msgs.map((m: ChatMessage) => ({ role: m.role, content: m.content })) };
  }
  if ("prompt" in o && "completion" in o) {
    if (typeof o.prompt !== "string" || typeof o.completion !== "string") {
      return `"prompt" and "completion" must be strings; got ${typeName(o.prompt)} and ${typeName(o.completion)}`;
    }
    return { prompt: o.prompt, completion: o.completion };
  }
  if ("text" in o) {
    return typeof o.text === "string" ? { text: o.text } : `"text" must be a string; got ${typeName(o.text)}`;
  }
  return `expected an object with ${SHAPES}; got keys ${JSON.stringify(Object.keys(o))}`;
}

/**
 * Parses a dataset file's text. `.txt`: documents separated by blank lines become {text} rows.
 * `.jsonl`: one object per non-empty line, shaped by its keys (input_ids > messages > prompt+completion > text).
 * Errors name `source` and the 1-based line; up to 10 are reported together.
 */
export function parseDataset(content: string, source: string, format: "txt" | "jsonl"): DataRow[] {
  const lines = content.replace(/\r\n?/g, "\n");
  if (format === "txt") {
    const rows = lines
      .split(/\n(?:[ \t]*\n)+/)
      .map((doc) => doc.replace(/^(?:[ \t]*\n)+/, "").trimEnd())
      .filter((doc) => doc.length > 0)
      .map((text) => ({ text }));
    if (rows.length === 0) throw new Error(`${source}: no documents found (the file is empty)`);
    return rows;
  }
  const rows: DataRow[] = [];
  const errors: string[] = [];
  lines.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    let row: DataRow | string;
    try {
      row = toRow(JSON.parse(line));
    } catch (err) {
      row = `invalid JSON (${(err as Error).message})`;
    }
    if (typeof row === "string") errors.push(`${source}:${i + 1}: ${row}`);
    else rows.push(row);
  });
  if (errors.length > 0) {
    const more = errors.length - MAX_ERRORS;
    const tail = more > 0 ? [`... and ${more} more error${more === 1 ? "" : "s"}`] : [];
    throw new Error([...errors.slice(0, MAX_ERRORS), ...tail].join("\n"));
  }
  if (rows.length === 0) {
    throw new Error(
      `${source}: no rows found (the file is empty); expected one JSON object per line with ${SHAPES}`,
    );
  }
  return rows;
}

/**
 * Token ids of one row and its loss mask. Mask convention: mask[t] = 1 when token ids[t] is a prediction
 * target, so the loss for the step predicting position t from t-1 uses mask[t]; mask[0] is ignored.
 */
export type TokenizedRow = { ids: number[]; mask: number[] };

const ones = (n: number) => new Array<number>(n).fill(1);
const isPrefix = (a: number[], b: number[]) => a.length <= b.length && a.every((x, i) => x === b[i]);

export function tokenizeRow(
  row: DataRow,
  tokenizer: Tokenizer,
  { maskPrompt }: { maskPrompt: boolean },
): TokenizedRow {
  const eos = tokenizer.eosIds.slice(0, 1);
  if ("input_ids" in row) return { ids: [...row.input_ids], mask: ones(row.input_ids.length) };
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
  return { ids: [...prompt, ...completion], mask };
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
