/** Reads a JSON object file, with errors that name the file and say what to check. */
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
  try {
    const value = JSON.parse(text) as unknown;
    if (value === null || typeof value !== "object" || Array.isArray(value))
      throw new Error("not a JSON object");
    return value as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${path}: invalid JSON (${(e as Error).message}); the file may be corrupt`);
  }
}
