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

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * A text file's bytes as a string: strict UTF-8 (as Python's open(encoding="utf-8") reads it: a byte
 * that is not UTF-8 is refused, never silently turned into U+FFFD), a leading BOM dropped.
 */
export function decodeTextFile(bytes: Uint8Array, path: string): string {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    let at = 0; // the first bad byte, for the message: the longest prefix that decodes
    for (let lo = 0, hi = bytes.length; lo < hi; ) {
      const mid = (lo + hi + 1) >> 1;
      try {
        new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, mid), { stream: true });
        lo = mid;
      } catch {
        hi = mid - 1;
      }
      at = lo;
    }
    throw new InputError(path, `is not UTF-8 text (an invalid byte near offset ${at}); re-save it as UTF-8`);
  }
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}
