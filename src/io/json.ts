/** A JSON file's text as the object it must hold, with errors that name the file (browser-safe). */
import { InputError } from "./input-error.js";

/** Parses `text` (the contents of `path`) as a JSON object; anything else names the file and the problem. */
export function parseJsonObject(text: string, path: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new InputError(path, `invalid JSON (${(e as Error).message}); the file may be corrupt`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value))
    throw new InputError(path, "invalid JSON (not a JSON object); the file may be corrupt");
  return value as Record<string, unknown>;
}
