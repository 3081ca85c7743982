/** Reads a JSON object file, with errors that name the file and say what to check. */
import { parseJsonObject } from "../json.js";
import { readTextFile } from "./read-file.js";

/** Reads and parses a JSON file (a regular file; a leading BOM is dropped). Missing optional files give null. */
export function readJson(path: string, optional = false): Record<string, unknown> | null {
  let text: string;
  try {
    text = readTextFile(path);
  } catch (e) {
    if (optional && ((e as Error).cause as NodeJS.ErrnoException | undefined)?.code === "ENOENT") return null;
    throw e;
  }
  return parseJsonObject(text, path);
}
