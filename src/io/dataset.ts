/** Dataset files: parses .txt (blank-line separated documents) and .jsonl text into typed rows (pure). */
import type { ChatMessage } from "./tokenizer.js";

export type DataRow =
  | { text: string }
  | { prompt: string; completion: string }
  | { messages: ChatMessage[] }
  | { input_ids: number[] };

const SHAPES = '"text", "prompt"+"completion", "messages" or "input_ids"';
const MAX_ERRORS = 10;
const MAX_ID = 2 ** 31 - 1;

const typeName = (v: unknown) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);

/** One parsed JSONL value to a row, or a description of what is wrong with it. */
function toRow(v: unknown): DataRow | string {
  if (typeName(v) !== "object") return `expected a JSON object; got ${typeName(v)}`;
  const o = v as Record<string, unknown>;
  if ("input_ids" in o) {
    const ids = o.input_ids;
    const ok = Array.isArray(ids) && ids.length > 0 && ids.every((x) => Number.isInteger(x) && x >= 0);
    if (!ok) return '"input_ids" must be a non-empty array of non-negative integers';
    // Ids become Int32Array elements, where 2^31 would read as -2^31, and 2^32 + 5 as 5.
    const big = ids.findIndex((x) => x > MAX_ID);
    return big < 0
      ? { input_ids: ids as number[] }
      : `"input_ids"[${big}] is ${ids[big]}, above the largest token id there can be (${MAX_ID})`;
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
