/** A JSON file's text as the object it must hold, with errors that name the file (browser-safe). */
import { InputError } from "./input-error.js";

/**
 * The deepest nesting a JSON file may have. Real configs, tokenizers and headers nest under 10 deep;
 * Python's json stops near 1000; code that walks a parsed value (JSON.stringify in a message, a
 * template) recurses, so a file nested 100,000 deep is refused when read, not deep in that code.
 */
export const MAX_JSON_DEPTH = 100;

/** How deeply `text` nests arrays and objects (strings skipped), stopping once past `limit`. */
export function jsonDepth(text: string, limit = MAX_JSON_DEPTH): number {
  let depth = 0;
  let max = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // a string: skip to its closing quote
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max && (max = depth) > limit) return max;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

/** The problem with `text`'s nesting, or null when it is within MAX_JSON_DEPTH. */
export function nestingProblem(text: string): string | null {
  return jsonDepth(text) > MAX_JSON_DEPTH
    ? `it nests arrays or objects more than ${MAX_JSON_DEPTH} deep (no real file does); the file is damaged or hostile`
    : null;
}

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
  const deep = nestingProblem(text);
  if (deep) throw new InputError(path, deep);
  return value as Record<string, unknown>;
}
