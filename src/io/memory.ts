/**
 * The memory a model needs, estimated from its config.json alone, before anything is built or read:
 * a lower bound (every family has at least its embedding and, per layer, an MLP's up and down
 * projections), plus what each layer's modules cost the JavaScript heap. A config claiming 10^12
 * vocabulary entries or 10^9 layers is refused here, in microseconds, with the figures. Browser-safe:
 * the machine's memory comes from the caller (io/node/memory.ts, or the page).
 */
import { InputError } from "./input-error.js";

type Json = Record<string, unknown>;

/** The heap a layer's module objects take, whatever their weights (measured: ~20 KiB; a lower bound). */
const LAYER_OVERHEAD = 4096;

const GIB = 2 ** 30;
/** Bytes in words: "1.50 GiB", "12.0 MiB". */
export const bytesText = (bytes: number) => {
  const [v, unit] = bytes >= GIB ? [bytes / GIB, "GiB"] : [bytes / 2 ** 20, "MiB"];
  return `${v >= 1000 ? Math.round(v).toLocaleString("en-US") : v.toPrecision(3)} ${unit}`;
};

// a size as the families accept it (a positive integer up to 2^31 − 1); 0 otherwise, and the family's
// own parser names the field
const count = (v: unknown): number =>
  Number.isInteger(v) && (v as number) > 0 && (v as number) < 2 ** 31 ? (v as number) : 0;

const textConfig = (config: Json): Json => {
  const text = config.text_config;
  return text !== null && typeof text === "object" && !Array.isArray(text)
    ? { ...config, ...(text as Json) }
    : config;
};

/** The layer count a config.json gives (0 when it gives none the families accept). */
export const configLayers = (config: Json) => {
  const c = textConfig(config);
  return count(c.num_hidden_layers ?? c.n_layer);
};

/**
 * A lower bound on the bytes a model of this config.json needs (weights in 4 or 2 bytes per value, plus
 * per-layer heap), from whichever spelling of the sizes the family uses; 0 for what it cannot read
 * (the family's own parser then reports the field).
 */
export function estimateModelBytes(config: Json, bytesPerWeight = 4): number {
  const text = config.text_config;
  const c =
    text !== null && typeof text === "object" && !Array.isArray(text)
      ? { ...config, ...(text as Json) }
      : config;
  const hidden = count(c.hidden_size ?? c.n_embd);
  const layers = count(c.num_hidden_layers ?? c.n_layer);
  const vocab = count(c.vocab_size);
  const inner = count(c.intermediate_size ?? c.n_inner ?? 4 * hidden);
  const weights = vocab * hidden + layers * 2 * hidden * inner;
  return weights * bytesPerWeight + layers * LAYER_OVERHEAD;
}

/**
 * Refuses, naming `source` and both figures, when `needed` bytes exceed `available`; `what` says what
 * needs them ("the model's weights"), `advice` what to do.
 */
export function checkMemory(
  needed: number,
  available: number | undefined,
  source: string,
  what: string,
  advice: string,
): void {
  if (available === undefined || needed <= available) return;
  throw new InputError(
    source,
    `${what} need at least ${bytesText(needed)}, more than the ${bytesText(available)} of memory available (this machine's, or --max-memory); ${advice}`,
  );
}

const UNITS: Record<string, number> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** "8G", "512MiB", "1.5gb", "1000000" as bytes (binary units); null when it is not a size. */
export function parseMemorySize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) return null;
  const bytes = Number(m[1]) * UNITS[m[2]!.toLowerCase()]!;
  return Number.isFinite(bytes) && bytes > 0 ? Math.floor(bytes) : null;
}
