/** Safetensors parse (fully validated, zero-copy views) and serialize (as Python does); browser-safe. */
import {
  DTYPE_SIZE,
  type DType,
  decodeToFloat32,
  encodeFromFloat32,
  HOST_LE,
  isDType,
} from "../tensor/dtype.js";
import { nestingProblem } from "./json.js";

export interface SafetensorsTensor {
  dtype: DType;
  shape: number[];
  /** A view into the parsed buffer (no copy). */
  bytes: Uint8Array;
}

export interface SafetensorsFile {
  metadata: Record<string, string>;
  tensors: Map<string, SafetensorsTensor>;
}

export type SerializableDType = "F32" | "F16" | "BF16" | "I32" | "I64";

export interface SerializableTensor {
  name: string;
  dtype: SerializableDType;
  shape: number[];
  /** Float32Array is encoded to `dtype` (F32/F16/BF16); Uint8Array is raw little-endian `dtype` bytes. */
  data: Float32Array | Uint8Array;
}

/** Every problem found in one file (or one serialize call), one per line after `source: summary:`. */
export class SafetensorsError extends Error {
  constructor(
    readonly source: string,
    readonly problems: string[],
    summary = "invalid safetensors file",
  ) {
    super(`${source}: ${summary}:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "SafetensorsError";
  }
}

const TRUNCATED = "the file may be truncated; re-download or re-save it";
const SUPPORTED = Object.keys(DTYPE_SIZE).join(", ");

const fmtShape = (shape: readonly number[]) => `[${shape.join(", ")}]`;
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
// a header value in a message: "(missing)" for an absent field, else its JSON, cut short (and never
// recursing out of the stack: a hostile header may nest 100,000 arrays deep)
function shown(v: unknown): string {
  if (v === undefined) return "(missing)";
  try {
    const s = JSON.stringify(v);
    return s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    return "(nested too deeply to show)";
  }
}

/** Where a tensor's bytes lie in the data section (offsets relative to its start), as the header says. */
export interface SafetensorsEntry {
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

/** A validated header: every entry's offsets lie inside the file, and no two entries overlap. */
export interface SafetensorsHeader {
  metadata: Record<string, string>;
  /** File offset of the data section: 8 + the header length. */
  dataStart: number;
  /** Bytes of the data section the entries use (the largest end offset; the rest is never read). */
  dataUsed: number;
  entries: Map<string, SafetensorsEntry>;
}

/** Rust safetensors refuses headers above 100 MB too; a real one (thousands of tensors) is well under 1 MB. */
export const MAX_HEADER_BYTES = 100_000_000;

/**
 * The header length from a file's first 8 bytes, checked against the file's size and MAX_HEADER_BYTES,
 * so a caller can read the header, and only the header, next.
 */
export function safetensorsHeaderLength(first8: Uint8Array, fileSize: number, source: string): number {
  const fail = (problem: string): never => {
    throw new SafetensorsError(source, [problem]);
  };
  if (fileSize < 8 || first8.byteLength < 8)
    fail(`file is ${fileSize} bytes, shorter than the 8-byte header length; ${TRUNCATED}`);
  const view = new DataView(first8.buffer, first8.byteOffset, 8);
  const headerLen = view.getUint32(4, true) * 2 ** 32 + view.getUint32(0, true);
  if (headerLen > fileSize - 8) {
    fail(`header length ${headerLen} runs past the end of the ${fileSize}-byte file; ${TRUNCATED}`);
  }
  if (headerLen > MAX_HEADER_BYTES) {
    fail(
      `header length ${headerLen} is above the ${MAX_HEADER_BYTES}-byte limit safetensors sets; this is not a safetensors file, or it is damaged`,
    );
  }
  return headerLen;
}

/**
 * Keys that appear more than once in one object of `text`, which must be valid JSON (JSON.parse keeps the
 * last copy silently). `within` is the top-level key whose value holds the duplicate (null: a top-level key).
 */
export function duplicateJsonKeys(text: string): Array<{ key: string; within: string | null }> {
  const found: Array<{ key: string; within: string | null }> = [];
  const open: Array<Set<string> | null> = []; // per open object its keys so far; null for an array
  let expectKey = false;
  let topKey: string | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string; // decoded, so "\u0061" and "a" are one key
        const keys = open.at(-1)!;
        if (keys.has(key)) found.push({ key, within: open.length === 1 ? null : topKey });
        keys.add(key);
        if (open.length === 1) topKey = key;
        expectKey = false;
      }
      i = j;
    } else if (c === "{") {
      open.push(new Set());
      expectKey = true;
    } else if (c === "[") {
      open.push(null);
    } else if (c === "}" || c === "]") {
      open.pop();
      expectKey = false;
    } else if (c === ",") {
      expectKey = open.at(-1) != null;
    }
  }
  return found;
}

/** Parses and validates a header (the JSON after the 8-byte length) of a `fileSize`-byte file. */
export function parseSafetensorsHeader(
  json: Uint8Array,
  fileSize: number,
  source: string,
): SafetensorsHeader {
  const fail = (problem: string): never => {
    throw new SafetensorsError(source, [problem]);
  };
  let text = "";
  let header: unknown;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(json);
    header = JSON.parse(text);
  } catch (err) {
    fail(`header is not valid UTF-8 JSON (${(err as Error).message}); ${TRUNCATED}`);
  }
  if (!isPlainObject(header)) return fail("header is not a JSON object");
  const deep = nestingProblem(text);
  if (deep) fail(`header: ${deep}`);

  const problems: string[] = duplicateJsonKeys(text).map(({ key, within }) =>
    within === null
      ? `tensor "${key}" is listed more than once (a JSON reader would silently keep the last); re-save the file`
      : `"${within}" has the key "${key}" more than once; re-save the file`,
  );
  const dataStart = 8 + json.byteLength;
  const dataLength = fileSize - dataStart;
  const metadata: Array<[string, string]> = [];
  const entries = new Map<string, SafetensorsEntry>();

  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (!isPlainObject(entry)) problems.push("__metadata__ is not an object of strings");
      else {
        for (const [k, v] of Object.entries(entry)) {
          if (typeof v === "string") metadata.push([k, v]);
          else problems.push(`__metadata__ "${k}" is ${shown(v)}, not a string`);
        }
      }
      continue;
    }
    const where = `tensor "${name}"`;
    if (!isPlainObject(entry)) {
      problems.push(`${where}: entry is not an object`);
      continue;
    }
    const { dtype, shape, data_offsets: offsets } = entry;
    const before = problems.length;
    if (!isDType(dtype)) problems.push(`${where}: unknown dtype ${shown(dtype)} (supported: ${SUPPORTED})`);
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      problems.push(`${where}: shape ${shown(shape)} is not an array of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      problems.push(`${where}: data_offsets ${shown(offsets)} is not a pair of non-negative integers`);
    } else if (offsets[0] > offsets[1] || offsets[1] > dataLength) {
      problems.push(
        `${where}: data_offsets ${fmtShape(offsets)} are outside the ${dataLength}-byte data section; ${TRUNCATED}`,
      );
    }
    if (problems.length > before) continue;
    const [begin, end] = offsets as [number, number];
    const need = numel(shape as number[]) * DTYPE_SIZE[dtype as DType];
    if (end - begin !== need) {
      problems.push(
        `${where}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${dtype} ${fmtShape(shape as number[])} needs ${need}`,
      );
      continue;
    }
    entries.set(name, { dtype: dtype as DType, shape: shape as number[], begin, end });
  }

  const spans = [...entries].sort(([, a], [, b]) => a.begin - b.begin || a.end - b.end);
  let last = spans[0]; // the span reaching furthest so far
  for (const cur of spans.slice(1)) {
    const [[lastName, l], [curName, c]] = [last!, cur];
    if (c.begin < l.end)
      problems.push(
        `tensors "${lastName}" [${l.begin}, ${l.end}] and "${curName}" [${c.begin}, ${c.end}] overlap`,
      );
    if (c.end > l.end) last = cur;
  }
  if (problems.length > 0) throw new SafetensorsError(source, problems);
  return { metadata: Object.fromEntries(metadata), dataStart, dataUsed: last?.[1].end ?? 0, entries };
}

/** The tensors of a validated header as views into `data`, the file's bytes from `header.dataStart` on. */
export function safetensorsViews(header: SafetensorsHeader, data: Uint8Array): SafetensorsFile {
  const tensors = new Map<string, SafetensorsTensor>();
  for (const [name, { dtype, shape, begin, end }] of header.entries)
    tensors.set(name, { dtype, shape, bytes: data.subarray(begin, end) });
  return { metadata: header.metadata, tensors };
}

/** Parses and validates a whole safetensors file held in memory. Tensor bytes are views into `bytes`. */
export function parseSafetensors(bytes: Uint8Array, source: string): SafetensorsFile {
  const headerLen = safetensorsHeaderLength(bytes.subarray(0, 8), bytes.byteLength, source);
  const header = parseSafetensorsHeader(bytes.subarray(8, 8 + headerLen), bytes.byteLength, source);
  return safetensorsViews(header, bytes.subarray(header.dataStart));
}

// Rust safetensors orders tensors by dtype (its enum order, descending), then by name; this ranks them so.
const DTYPE_RANK: Record<SerializableDType, number> = { I64: 4, F32: 3, I32: 2, BF16: 1, F16: 0 };
const SERIALIZABLE = Object.keys(DTYPE_RANK);

/** Serializes as Python/Rust safetensors does: sorted, contiguous, header space-padded to 8 bytes. */
export function serializeSafetensors(
  tensors: SerializableTensor[],
  metadata?: Record<string, string>,
): Uint8Array {
  const problems: string[] = [];
  const seen = new Set<string>();
  const encoded: Array<{ t: SerializableTensor; bytes: Uint8Array }> = [];
  for (const t of tensors) {
    const where = `tensor "${t.name}"`;
    if (t.name === "" || t.name === "__metadata__") problems.push(`${where}: name is reserved or empty`);
    if (seen.has(t.name)) problems.push(`${where}: name appears more than once`);
    seen.add(t.name);
    if (!Object.hasOwn(DTYPE_RANK, t.dtype)) {
      problems.push(
        `${where}: dtype ${JSON.stringify(t.dtype)} cannot be written (supported: ${SERIALIZABLE.join(", ")})`,
      );
      continue;
    }
    if (!Array.isArray(t.shape) || !t.shape.every(isCount)) {
      problems.push(`${where}: shape ${JSON.stringify(t.shape)} is not an array of non-negative integers`);
      continue;
    }
    const n = numel(t.shape);
    if (t.data instanceof Float32Array) {
      if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16") {
        problems.push(
          `${where}: Float32Array data cannot be encoded as ${t.dtype}; pass raw bytes as a Uint8Array`,
        );
      } else if (t.data.length !== n) {
        problems.push(`${where}: ${t.data.length} values but shape ${fmtShape(t.shape)} needs ${n}`);
      } else encoded.push({ t, bytes: encodeFromFloat32(t.data, t.dtype) });
    } else if (t.data.byteLength !== n * DTYPE_SIZE[t.dtype]) {
      problems.push(
        `${where}: ${t.data.byteLength} bytes but ${t.dtype} ${fmtShape(t.shape)} needs ${n * DTYPE_SIZE[t.dtype]}`,
      );
    } else encoded.push({ t, bytes: t.data });
  }
  for (const [k, v] of Object.entries(metadata ?? {})) {
    if (typeof v !== "string") problems.push(`metadata "${k}" is ${JSON.stringify(v)}, not a string`);
  }
  if (problems.length > 0) throw new SafetensorsError("serializeSafetensors", problems, "cannot serialize");

  encoded.sort(
    (a, b) =>
      DTYPE_RANK[b.t.dtype] - DTYPE_RANK[a.t.dtype] ||
      (a.t.name < b.t.name ? -1 : a.t.name > b.t.name ? 1 : 0),
  );
  // Built entry by entry so that key order is exactly this order (JS objects would hoist integer-like keys).
  const entries: string[] = [];
  if (metadata) {
    const sorted = Object.keys(metadata).sort();
    entries.push(
      `"__metadata__":{${sorted.map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`).join(",")}}`,
    );
  }
  let offset = 0;
  for (const { t, bytes } of encoded) {
    const info = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    entries.push(`${JSON.stringify(t.name)}:${JSON.stringify(info)}`);
    offset += bytes.byteLength;
  }
  const json = new TextEncoder().encode(`{${entries.join(",")}}`);
  const headerLen = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLen + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, headerLen % 2 ** 32, true);
  view.setUint32(4, Math.floor(headerLen / 2 ** 32), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLen);
  let at = 8 + headerLen;
  for (const { bytes } of encoded) {
    out.set(bytes, at);
    at += bytes.byteLength;
  }
  return out;
}

/** A parsed tensor as float32 (a view for aligned F32, otherwise a converted copy). */
export function tensorToFloat32(entry: Pick<SafetensorsTensor, "dtype" | "bytes">): Float32Array {
  return decodeToFloat32(entry.bytes, entry.dtype);
}

/** The dtypes a weight may be stored in; an integer or BOOL tensor where a weight belongs is refused. */
export const FLOAT_DTYPES: readonly DType[] = ["F32", "F16", "BF16", "F64"];

// Per float dtype: bytes per element, and the masks of its exponent bits in the element's top byte and
// the byte below it (little-endian, so at offsets size-1 and size-2). All exponent bits set: NaN or ±Inf.
const EXPONENT: Partial<Record<DType, [size: number, top: number, next: number]>> = {
  F64: [8, 0x7f, 0xf0],
  F32: [4, 0x7f, 0x80],
  BF16: [2, 0x7f, 0x80],
  F16: [2, 0x7c, 0x00],
};
// The same masks over aligned 32-bit words (one F32, or two 16-bit values) on a little-endian host:
// adding the low bit of the exponent carries into the bit above it exactly when every exponent bit is set.
const WORD: Partial<Record<DType, [mask: number, carry: number, top: number]>> = {
  F32: [0x7f800000, 0x00800000, 0x80000000 | 0],
  BF16: [0x7f807f80, 0x00800080, 0x80008000 | 0],
  F16: [0x7c007c00, 0x04000400, 0x80008000 | 0],
};

/**
 * How many of a float tensor's stored values are NaN or ±Inf, and the flat index of the first; null when
 * all are finite (or the dtype is not a float). Reads the exponent bits in place, decoding nothing: an
 * aligned tensor is checked a word at a time, and only a tensor that fails is scanned value by value.
 */
export function nonFiniteValues(
  entry: Pick<SafetensorsTensor, "dtype" | "bytes">,
): { count: number; first: number } | null {
  const { dtype, bytes } = entry;
  const exp = EXPONENT[dtype];
  if (!exp) return null;
  const word = WORD[dtype];
  if (word && HOST_LE && bytes.byteOffset % 4 === 0 && bytes.byteLength % 4 === 0) {
    const [mask, carry, top] = word;
    const u = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    let acc = 0;
    for (let i = 0; i < u.length; i++) acc |= (u[i]! & mask) + carry;
    if ((acc & top) === 0) return null;
  }
  const [size, hi, lo] = exp;
  let count = 0;
  let first = -1;
  for (let i = size - 1; i < bytes.byteLength; i += size) {
    if ((bytes[i]! & hi) === hi && (bytes[i - 1]! & lo) === lo && count++ === 0) first = (i + 1) / size - 1;
  }
  return count > 0 ? { count, first } : null;
}

/** "holds N NaN or infinite value(s) (the first at flat index i)", or null when every value is finite. */
export function describeNonFinite(entry: Pick<SafetensorsTensor, "dtype" | "bytes">): string | null {
  const bad = nonFiniteValues(entry);
  if (!bad) return null;
  const s = bad.count > 1 ? "s" : "";
  return `holds ${bad.count} NaN or infinite value${s} (the first at flat index ${bad.first})`;
}
