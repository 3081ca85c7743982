/** Reads a JSON object file, with errors that name the file and say what to check. */
import { readFileSync } from "node:fs";

/** Reads and parses a JSON file, with errors that name the file. Missing optional files give null. */
export function readJson(path: string, optional = false): Record<string, unknown> | null {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    if (optional && (e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new Error(
      `${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); check the path`,
    );
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
