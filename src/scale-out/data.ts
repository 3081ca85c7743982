/**
 * Training data as TRL reads it: each of our row shapes maps one to one onto a TRL dataset format
 * ({"text"} language modeling, {"prompt","completion"} prompt-completion, {"messages"} conversational,
 * {"input_ids"} already tokenized). TRL takes one format per dataset, so mixed files are refused. Pure.
 */
import type { DataRow } from "../io/dataset.js";
import type { DataFormat } from "./mapping.js";

/** The format of a row. */
export function rowFormat(row: DataRow): DataFormat {
  if ("input_ids" in row) return "input_ids";
  if ("messages" in row) return "messages";
  if ("prompt" in row) return "prompt-completion";
  return "text";
}

/** The rows' one format; `source` names the file in the error when they mix formats. */
export function dataFormat(rows: readonly DataRow[], source: string): DataFormat {
  if (rows.length === 0) throw new Error(`${source}: no rows; the data needs at least one`);
  const first = rowFormat(rows[0]!);
  const other = rows.findIndex((r) => rowFormat(r) !== first);
  if (other >= 0)
    throw new Error(
      `${source}: row ${other + 1} is ${rowFormat(rows[other]!)} but row 1 is ${first}; TRL reads one format per dataset, so split the file by format`,
    );
  return first;
}

/** The rows as JSONL for datasets.load_dataset("json"): one object per row, with TRL's column names. */
export function trlJsonl(rows: readonly DataRow[]): string {
  return rows.map((r) => `${JSON.stringify(r)}\n`).join("");
}
