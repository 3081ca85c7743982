/** Safetensors parse (fully validated, zero-copy views) and serialize (as Python does); browser-safe. */
import { DTYPE_SIZE, type DType, decodeToFloat32, encodeFromFloat32, isDType } from "../tensor/dtype.js";

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

/** Parses and validates a whole safetensors file held in memory. Tensor bytes are views into `bytes`. */
export function parseSafetensors(bytes: Uint8Array, source: string): SafetensorsFile {
  const fail = (problem: string): never => {
    throw new SafetensorsError(source, [problem]);
  };
  if (bytes.byteLength < 8)
    fail(`file is ${bytes.byteLength} bytes, shorter than the 8-byte header length; ${TRUNCATED}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = view.getUint32(4, true) * 2 ** 32 + view.getUint32(0, true);
  if (headerLen > bytes.byteLength - 8) {
    fail(`header length ${headerLen} runs past the end of the ${bytes.byteLength}-byte file; ${TRUNCATED}`);
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (err) {
    fail(`header is not valid UTF-8 JSON (${(err as Error).message}); ${TRUNCATED}`);
  }
  if (!isPlainObject(header)) return fail("header is not a JSON object");

  const problems: string[] = [];
  const dataStart = 8 + headerLen;
  const dataLength = bytes.byteLength - dataStart;
  const metadata: Array<[string, string]> = [];
  const tensors = new Map<string, SafetensorsTensor>();
  const spans: Array<{ name: string; begin: number; end: number }> = [];

  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (!isPlainObject(entry)) problems.push("__metadata__ is not an object of strings");
      else {
        for (const [k, v] of Object.entries(entry)) {
          if (typeof v === "string") metadata.push([k, v]);
          else problems.push(`__metadata__ "${k}" is ${JSON.stringify(v)}, not a string`);
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
    if (!isDType(dtype))
      problems.push(`${where}: unknown dtype ${JSON.stringify(dtype)} (supported: ${SUPPORTED})`);
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      problems.push(`${where}: shape ${JSON.stringify(shape)} is not an array of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      problems.push(
        `${where}: data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`,
      );
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
    spans.push({ name, begin, end });
    tensors.set(name, {
      dtype: dtype as DType,
      shape: shape as number[],
      bytes: bytes.subarray(dataStart + begin, dataStart + end),
    });
  }

  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let last = spans[0]; // the span reaching furthest so far
  for (const cur of spans.slice(1)) {
    if (cur.begin < last!.end) {
      problems.push(
        `tensors "${last!.name}" [${last!.begin}, ${last!.end}] and "${cur.name}" [${cur.begin}, ${cur.end}] overlap`,
      );
    }
    if (cur.end > last!.end) last = cur;
  }
  if (problems.length > 0) throw new SafetensorsError(source, problems);
  return { metadata: Object.fromEntries(metadata), tensors };
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
