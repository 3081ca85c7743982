/**
 * GGUF v3 writer: typed metadata entries (scalars, strings, arrays of either), a tensor table in
 * ggml's dimension order (`ne[0]` is the length of a row, the fastest-moving index, so a row-major
 * [rows, cols] array has ne = [cols, rows]), and the tensor data, each tensor starting at a multiple
 * of `general.alignment` (32 unless the metadata says otherwise) from the start of the data section.
 * Layout, as ggml's gguf.cpp reads it: magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
 * the metadata (key string, u32 value type, value), the tensor infos (name string, u32 n_dims, u64 ne[],
 * u32 ggml type, u64 offset into the data section), zero padding to the alignment, then the data.
 * Strings are a u64 byte length and UTF-8 bytes with no terminator; everything is little-endian.
 * Browser-safe: it returns the file's bytes.
 */
import {
  GGML_BLOCK,
  type GGMLType,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VERSION,
  GGUFValueType,
  ggmlTypeName,
} from "./gguf-types.js";

type NumberType = Exclude<GGUFValueType, GGUFValueType.STRING | GGUFValueType.BOOL | GGUFValueType.ARRAY>;
type ScalarValue =
  | { type: GGUFValueType.STRING; value: string }
  | { type: GGUFValueType.BOOL; value: boolean }
  | { type: NumberType; value: number | bigint };

/** One metadata value: a scalar, or an array whose items all have `itemType` (arrays do not nest here). */
export type GGUFValue =
  | ScalarValue
  | { type: GGUFValueType.ARRAY; itemType: GGUFValueType.STRING; value: readonly string[] }
  | { type: GGUFValueType.ARRAY; itemType: GGUFValueType.BOOL; value: readonly boolean[] }
  | { type: GGUFValueType.ARRAY; itemType: NumberType; value: readonly (number | bigint)[] };

/** Builders for the metadata values llama.cpp reads most (`gguf.f32(8)`, `gguf.strings([...])`). */
export const gguf = {
  string: (value: string): GGUFValue => ({ type: GGUFValueType.STRING, value }),
  bool: (value: boolean): GGUFValue => ({ type: GGUFValueType.BOOL, value }),
  u32: (value: number): GGUFValue => ({ type: GGUFValueType.UINT32, value }),
  i32: (value: number): GGUFValue => ({ type: GGUFValueType.INT32, value }),
  u64: (value: number | bigint): GGUFValue => ({ type: GGUFValueType.UINT64, value }),
  f32: (value: number): GGUFValue => ({ type: GGUFValueType.FLOAT32, value }),
  strings: (value: readonly string[]): GGUFValue => ({
    type: GGUFValueType.ARRAY,
    itemType: GGUFValueType.STRING,
    value,
  }),
  array: (itemType: NumberType, value: readonly (number | bigint)[]): GGUFValue => ({
    type: GGUFValueType.ARRAY,
    itemType,
    value,
  }),
};

/** A tensor to write: its name, ggml type, dimensions in ggml order, and its encoded bytes. */
export interface GGUFWriteTensor {
  name: string;
  type: GGMLType;
  /** ggml order: ne[0] is the row length (a row-major [rows, cols] array is [cols, rows]). */
  ne: readonly number[];
  data: Uint8Array;
}

const ALIGNMENT_KEY = "general.alignment";
/** ggml's GGML_MAX_DIMS and GGML_MAX_NAME (a name's bytes plus its terminating zero). */
const MAX_DIMS = 4;
const MAX_NAME = 64;

const SIZES: Partial<Record<GGUFValueType, number>> = {
  [GGUFValueType.UINT8]: 1,
  [GGUFValueType.INT8]: 1,
  [GGUFValueType.UINT16]: 2,
  [GGUFValueType.INT16]: 2,
  [GGUFValueType.UINT32]: 4,
  [GGUFValueType.INT32]: 4,
  [GGUFValueType.FLOAT32]: 4,
  [GGUFValueType.BOOL]: 1,
  [GGUFValueType.UINT64]: 8,
  [GGUFValueType.INT64]: 8,
  [GGUFValueType.FLOAT64]: 8,
};

const INT_RANGE: Partial<Record<GGUFValueType, [bigint, bigint]>> = {
  [GGUFValueType.UINT8]: [0n, 0xffn],
  [GGUFValueType.INT8]: [-0x80n, 0x7fn],
  [GGUFValueType.UINT16]: [0n, 0xffffn],
  [GGUFValueType.INT16]: [-0x8000n, 0x7fffn],
  [GGUFValueType.UINT32]: [0n, 0xffffffffn],
  [GGUFValueType.INT32]: [-0x80000000n, 0x7fffffffn],
  [GGUFValueType.UINT64]: [0n, 0xffffffffffffffffn],
  [GGUFValueType.INT64]: [-0x8000000000000000n, 0x7fffffffffffffffn],
};

const utf8 = new TextEncoder();

/** Grows as it is written; `bytes()` is the written part. */
class ByteWriter {
  private buf = new Uint8Array(4096);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private room(n: number): number {
    if (this.length + n > this.buf.length) {
      const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
      next.set(this.buf.subarray(0, this.length));
      this.buf = next;
      this.view = new DataView(next.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }

  // `room` may replace buf and view, so it runs before either is read
  bytes(b: Uint8Array) {
    const at = this.room(b.length);
    this.buf.set(b, at);
  }
  u32(v: number) {
    const at = this.room(4);
    this.view.setUint32(at, v, true);
  }
  u64(v: number | bigint) {
    const at = this.room(8);
    this.view.setBigUint64(at, BigInt(v), true);
  }
  string(s: string) {
    const b = utf8.encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  scalar(type: GGUFValueType, v: string | boolean | number | bigint) {
    if (type === GGUFValueType.STRING) return this.string(v as string);
    const at = this.room(SIZES[type]!);
    const d = this.view;
    switch (type) {
      case GGUFValueType.BOOL:
        return d.setUint8(at, v ? 1 : 0);
      case GGUFValueType.FLOAT32:
        return d.setFloat32(at, Number(v), true);
      case GGUFValueType.FLOAT64:
        return d.setFloat64(at, Number(v), true);
      case GGUFValueType.UINT8:
        return d.setUint8(at, Number(v));
      case GGUFValueType.INT8:
        return d.setInt8(at, Number(v));
      case GGUFValueType.UINT16:
        return d.setUint16(at, Number(v), true);
      case GGUFValueType.INT16:
        return d.setInt16(at, Number(v), true);
      case GGUFValueType.UINT32:
        return d.setUint32(at, Number(v), true);
      case GGUFValueType.INT32:
        return d.setInt32(at, Number(v), true);
      case GGUFValueType.UINT64:
        return d.setBigUint64(at, BigInt(v), true);
      case GGUFValueType.INT64:
        return d.setBigInt64(at, BigInt(v), true);
    }
  }
  result(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

/** What is wrong with one value of type `type` (null: nothing). */
function scalarProblem(type: GGUFValueType, v: unknown): string | null {
  if (type === GGUFValueType.STRING) return typeof v === "string" ? null : "is not a string";
  if (type === GGUFValueType.BOOL) return typeof v === "boolean" ? null : "is not a boolean";
  if (type === GGUFValueType.FLOAT32 || type === GGUFValueType.FLOAT64)
    return typeof v === "number" ? null : "is not a number";
  const range = INT_RANGE[type];
  if (!range) return `has the unknown value type ${type}`;
  if (!(typeof v === "bigint" || (typeof v === "number" && Number.isSafeInteger(v))))
    return `is not an integer (${String(v)})`;
  const b = BigInt(v);
  return b < range[0] || b > range[1] ? `${b} is out of range for ${GGUFValueType[type]}` : null;
}

function valueProblems(key: string, value: GGUFValue): string[] {
  if (value.type !== GGUFValueType.ARRAY) {
    const p = scalarProblem(value.type, value.value);
    return p ? [`metadata "${key}" ${p}`] : [];
  }
  if ((value.itemType as GGUFValueType) === GGUFValueType.ARRAY)
    return [`metadata "${key}": nested arrays are not written`];
  const problems: string[] = [];
  value.value.forEach((item, i) => {
    const p = scalarProblem(value.itemType, item);
    if (p && problems.length < 3) problems.push(`metadata "${key}"[${i}] ${p}`);
  });
  return problems;
}

/** The number of bytes a tensor of `type` with dimensions `ne` takes, or a problem. */
export function ggmlTensorBytes(type: GGMLType, ne: readonly number[]): number | string {
  const block = GGML_BLOCK[type];
  if (!block) return `its type ${ggmlTypeName(type)} has no known block size`;
  if (ne.length === 0 || ne.length > MAX_DIMS)
    return `it has ${ne.length} dimensions; ggml takes 1 to ${MAX_DIMS}`;
  if (!ne.every((n) => Number.isSafeInteger(n) && n > 0))
    return `its dimensions [${ne.join(", ")}] are not all positive integers`;
  if (ne[0]! % block.elements !== 0)
    return `its row length ${ne[0]} is not a multiple of ${ggmlTypeName(type)}'s block of ${block.elements}`;
  const n = ne.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(n)) return `its ${ne.join("×")} elements are too many`;
  return (n / block.elements) * block.bytes;
}

const pad = (n: number, alignment: number) => (alignment - (n % alignment)) % alignment;

/**
 * The bytes of a GGUF v3 file holding `metadata` (in the order given) and `tensors` (in the order
 * given, each aligned). `general.alignment` is written as a u32 (default 32) when the metadata lacks
 * it. Every problem (duplicate keys or names, a value of the wrong type, a name over ggml's 63 bytes,
 * data of the wrong size) is reported at once.
 */
export function serializeGGUF(
  metadata: ReadonlyArray<readonly [string, GGUFValue]>,
  tensors: readonly GGUFWriteTensor[],
): Uint8Array {
  const problems: string[] = [];
  const entries = [...metadata];
  const keys = new Set<string>();
  for (const [key, value] of entries) {
    if (keys.has(key)) problems.push(`metadata "${key}" is given twice`);
    keys.add(key);
    problems.push(...valueProblems(key, value));
  }
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const given = entries.find(([k]) => k === ALIGNMENT_KEY)?.[1];
  if (given) {
    const a = Number(given.value);
    if (given.type !== GGUFValueType.UINT32 || !(a > 0 && (a & (a - 1)) === 0))
      problems.push(`metadata "${ALIGNMENT_KEY}" must be a u32 power of two (ggml reads it so)`);
    else alignment = a;
  } else entries.push([ALIGNMENT_KEY, gguf.u32(alignment)]);

  const names = new Set<string>();
  const offsets: number[] = [];
  let dataSize = 0;
  for (const t of tensors) {
    if (names.has(t.name)) problems.push(`tensor "${t.name}" is given twice`);
    names.add(t.name);
    const nameBytes = utf8.encode(t.name).length;
    if (nameBytes === 0 || nameBytes >= MAX_NAME)
      problems.push(`tensor "${t.name}": its name is ${nameBytes} bytes; ggml takes 1 to ${MAX_NAME - 1}`);
    const size = ggmlTensorBytes(t.type, t.ne);
    if (typeof size === "string") problems.push(`tensor "${t.name}": ${size}`);
    else if (size !== t.data.byteLength)
      problems.push(
        `tensor "${t.name}": ${t.data.byteLength} bytes of data, but ${ggmlTypeName(t.type)} [${t.ne.join(", ")}] takes ${size}`,
      );
    offsets.push(dataSize);
    dataSize += t.data.byteLength + pad(t.data.byteLength, alignment);
  }
  if (problems.length > 0)
    throw new Error(
      `cannot write GGUF (${problems.length} problem${problems.length > 1 ? "s" : ""}):\n${problems.map((p) => `  - ${p}`).join("\n")}`,
    );

  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(GGUF_VERSION);
  w.u64(tensors.length);
  w.u64(entries.length);
  for (const [key, value] of entries) {
    w.string(key);
    w.u32(value.type);
    if (value.type === GGUFValueType.ARRAY) {
      w.u32(value.itemType);
      w.u64(value.value.length);
      for (const item of value.value) w.scalar(value.itemType, item);
    } else w.scalar(value.type, value.value);
  }
  tensors.forEach((t, i) => {
    w.string(t.name);
    w.u32(t.ne.length);
    for (const n of t.ne) w.u64(n);
    w.u32(t.type);
    w.u64(offsets[i]!);
  });
  const head = w.result();
  const dataStart = head.length + pad(head.length, alignment);
  const out = new Uint8Array(dataStart + dataSize); // zero-filled: the padding
  out.set(head);
  tensors.forEach((t, i) => out.set(t.data, dataStart + offsets[i]!));
  return out;
}
