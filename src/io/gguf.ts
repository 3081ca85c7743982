/**
 * The strict GGUF reader (versions 2 and 3, little-endian), as ggml's gguf.cpp lays the file out:
 * magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata (key string, u32
 * value type, value; arrays are u32 element type, u64 count, elements), the tensor infos (name,
 * u32 n_dims, u64 ne[n_dims] in ggml order (ne[0] is the row length), u32 ggml type, u64 offset
 * relative to the data), padding to `general.alignment` (default 32), then the data.
 *
 * The header is read header-first through a `GGUFByteSource`, so a reader asks only for the bytes it
 * needs. Every count and length is checked against the bytes left in the file before anything is
 * allocated, so a hostile header costs at most the file's size. A bad file gives one line of our
 * own (GGUFError) that names the file and the problem.
 */
import {
  GGML_BLOCK,
  GGMLType,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUFValueType,
  ggmlTypeName,
} from "./gguf-types.js";

export type GGUFValue = number | bigint | boolean | string | GGUFValue[];

/** A metadata value's GGUF type; `arrayType` for an array's elements (arrays of arrays nest). */
export interface GGUFValueInfo {
  type: GGUFValueType;
  arrayType?: GGUFValueType;
  /** For an array of arrays: its first element's type. */
  inner?: GGUFValueInfo;
}

export interface GGUFTensorInfo {
  name: string;
  /** ne[], ggml order: dims[0] is the length of a row (the fastest-varying axis). */
  dims: number[];
  /** The row-major shape (dims reversed): [out, in] for a linear weight. */
  shape: number[];
  type: GGMLType;
  /** Absolute byte offset of the tensor's data in the file. */
  offset: number;
  /** Bytes of data. */
  bytes: number;
  /** Elements (the product of dims). */
  elements: number;
}

export interface GGUFHeader {
  version: number;
  metadata: Map<string, GGUFValue>;
  types: Map<string, GGUFValueInfo>;
  /** In the order the file lists them. */
  tensors: GGUFTensorInfo[];
  alignment: number;
  /** Absolute offset of the data section. */
  dataOffset: number;
  /** The file's size the header was checked against. */
  size: number;
}

/** The bytes of a file on demand: `read` returns `length` bytes from `offset` (fewer only at the end). */
export interface GGUFByteSource {
  size: number;
  read(offset: number, length: number): Uint8Array;
}

export class GGUFError extends Error {
  constructor(
    readonly source: string,
    readonly problem: string,
  ) {
    super(`${source}: invalid GGUF file: ${problem}`);
    this.name = "GGUFError";
  }
}

const GGML_MAX_DIMS = 4;
const CHUNK = 1 << 20;
const SHOWN = 3;
const utf8 = new TextDecoder("utf-8", { fatal: true });

// Smallest encoded size of one value of each type, to bound a count by the bytes left.
const MIN_SIZE: Record<GGUFValueType, number> = {
  [GGUFValueType.UINT8]: 1,
  [GGUFValueType.INT8]: 1,
  [GGUFValueType.UINT16]: 2,
  [GGUFValueType.INT16]: 2,
  [GGUFValueType.UINT32]: 4,
  [GGUFValueType.INT32]: 4,
  [GGUFValueType.FLOAT32]: 4,
  [GGUFValueType.BOOL]: 1,
  [GGUFValueType.STRING]: 8,
  [GGUFValueType.ARRAY]: 12,
  [GGUFValueType.UINT64]: 8,
  [GGUFValueType.INT64]: 8,
  [GGUFValueType.FLOAT64]: 8,
};

/** Whether the bytes start with the GGUF magic (how a path is told to be a GGUF file). */
export function isGGUF(bytes: Uint8Array): boolean {
  return (
    bytes.length >= 4 && new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true) === GGUF_MAGIC
  );
}

class Cursor {
  pos = 0;
  private buf: Uint8Array = new Uint8Array(0);
  private view: DataView = new DataView(this.buf.buffer);
  private bufAt = 0;

  constructor(
    private readonly src: GGUFByteSource,
    private readonly source: string,
  ) {}

  fail(problem: string): never {
    throw new GGUFError(this.source, problem);
  }

  get left(): number {
    return this.src.size - this.pos;
  }

  // `n` bytes at the cursor, as a view valid until the next call; the cursor moves past them.
  private take(n: number, what: string): { view: DataView; at: number; bytes: Uint8Array } {
    if (n > this.left)
      this.fail(
        `the file ends inside ${what} (needs ${n} bytes at offset ${this.pos}, the file has ${this.src.size}); the file is truncated, download it again`,
      );
    let at = this.pos - this.bufAt;
    if (at < 0 || at + n > this.buf.length) {
      const length = Math.min(Math.max(n, CHUNK), this.left);
      const bytes = this.src.read(this.pos, length);
      if (bytes.length < n) this.fail(`the file ends inside ${what} (it shrank while being read)`);
      this.buf = bytes;
      this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      this.bufAt = this.pos;
      at = 0;
    }
    this.pos += n;
    return { view: this.view, at, bytes: this.buf.subarray(at, at + n) };
  }

  u8(what: string): number {
    const { view, at } = this.take(1, what);
    return view.getUint8(at);
  }
  u32(what: string): number {
    const { view, at } = this.take(4, what);
    return view.getUint32(at, true);
  }
  u64(what: string): bigint {
    const { view, at } = this.take(8, what);
    return view.getBigUint64(at, true);
  }

  /** A u64 count or length that must fit in the `unit`-byte items left in the file. */
  count(what: string, unit: number): number {
    const n = this.u64(what);
    if (n > BigInt(Math.floor(this.left / unit)))
      this.fail(`${what} is ${n}, but only ${this.left} bytes are left in the file`);
    return Number(n);
  }

  string(what: string): string {
    const n = this.u64(`the length of ${what}`);
    if (n > BigInt(this.left))
      this.fail(`${what} is ${n} bytes long, longer than the ${this.left} bytes left in the file`);
    const { bytes } = this.take(Number(n), what);
    try {
      return utf8.decode(bytes);
    } catch {
      return this.fail(`${what} is not valid UTF-8`);
    }
  }

  value(type: number, what: string, depth = 0): { value: GGUFValue; info: GGUFValueInfo } {
    switch (type) {
      case GGUFValueType.UINT8:
        return { value: this.u8(what), info: { type } };
      case GGUFValueType.INT8: {
        const { view, at } = this.take(1, what);
        return { value: view.getInt8(at), info: { type } };
      }
      case GGUFValueType.UINT16: {
        const { view, at } = this.take(2, what);
        return { value: view.getUint16(at, true), info: { type } };
      }
      case GGUFValueType.INT16: {
        const { view, at } = this.take(2, what);
        return { value: view.getInt16(at, true), info: { type } };
      }
      case GGUFValueType.UINT32:
        return { value: this.u32(what), info: { type } };
      case GGUFValueType.INT32: {
        const { view, at } = this.take(4, what);
        return { value: view.getInt32(at, true), info: { type } };
      }
      case GGUFValueType.FLOAT32: {
        const { view, at } = this.take(4, what);
        return { value: view.getFloat32(at, true), info: { type } };
      }
      case GGUFValueType.BOOL: {
        const b = this.u8(what);
        if (b > 1) this.fail(`${what} is a bool holding ${b} (must be 0 or 1)`);
        return { value: b === 1, info: { type } };
      }
      case GGUFValueType.STRING:
        return { value: this.string(what), info: { type } };
      case GGUFValueType.UINT64:
        return { value: this.u64(what), info: { type } };
      case GGUFValueType.INT64: {
        const { view, at } = this.take(8, what);
        return { value: view.getBigInt64(at, true), info: { type } };
      }
      case GGUFValueType.FLOAT64: {
        const { view, at } = this.take(8, what);
        return { value: view.getFloat64(at, true), info: { type } };
      }
      case GGUFValueType.ARRAY: {
        if (depth >= 8) this.fail(`${what} nests arrays more than 8 deep`);
        const elemType = this.u32(`the element type of ${what}`);
        if (!(elemType in MIN_SIZE)) this.fail(`${what} is an array of unknown value type ${elemType}`);
        const n = this.count(`the element count of ${what}`, MIN_SIZE[elemType as GGUFValueType]);
        const out: GGUFValue[] = new Array(n);
        let inner: GGUFValueInfo | undefined;
        for (let i = 0; i < n; i++) {
          const v = this.value(elemType, `${what}[${i}]`, depth + 1);
          out[i] = v.value;
          inner ??= v.info;
        }
        const info: GGUFValueInfo = { type, arrayType: elemType };
        if (elemType === GGUFValueType.ARRAY && inner) info.inner = inner;
        return { value: out, info };
      }
      default:
        return this.fail(`${what} has unknown value type ${type}`);
    }
  }
}

const fromBytes = (bytes: Uint8Array): GGUFByteSource => ({
  size: bytes.length,
  read: (offset, length) => bytes.subarray(offset, offset + length),
});

function summary(problems: string[]): string {
  const shown = problems.slice(0, SHOWN).join("; ");
  return problems.length > SHOWN ? `${shown}; and ${problems.length - SHOWN} more` : shown;
}

/**
 * Parses and checks a GGUF file's header (everything before the data) from `src` (a byte source or
 * the whole file), naming `source` in errors. Checks the tensor table against the file's size:
 * every tensor of a known ggml type, at most 4 dims, rows a whole number of blocks, data aligned,
 * inside the file and not overlapping another tensor. Throws GGUFError.
 */
export function parseGGUFHeader(src: GGUFByteSource | Uint8Array, source: string): GGUFHeader {
  const c = new Cursor(src instanceof Uint8Array ? fromBytes(src) : src, source);
  const size = (src as { size?: number }).size ?? (src as Uint8Array).length;
  if (size < 4)
    c.fail(`it is ${size} bytes long, too short for a GGUF header; the file is truncated or not GGUF`);
  const magic = c.u32("the magic");
  if (magic !== GGUF_MAGIC) {
    const text = [0, 8, 16, 24].map((s) => (magic >>> s) & 0xff);
    const shown = text.every((b) => b >= 0x20 && b < 0x7f)
      ? JSON.stringify(String.fromCharCode(...text))
      : `0x${magic.toString(16).padStart(8, "0")}`;
    c.fail(`bad magic ${shown} (a GGUF file starts with "GGUF"); this is not a GGUF file`);
  }
  const version = c.u32("the version");
  if (version === 1)
    c.fail("version 1 is not supported (it is obsolete); convert the model again with a current llama.cpp");
  if (version !== 2 && version !== 3)
    c.fail(
      `unknown version ${version} (this reader knows versions 2 and 3)${version > 0xffff ? "; the file may be big-endian, which is not supported" : ""}`,
    );
  const tensorCount = c.count("the tensor count", 24);
  const kvCount = c.count("the metadata count", 13);

  const metadata = new Map<string, GGUFValue>();
  const types = new Map<string, GGUFValueInfo>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string(`metadata key ${i}`);
    if (metadata.has(key)) c.fail(`metadata key ${JSON.stringify(key)} appears twice`);
    const type = c.u32(`the value type of ${JSON.stringify(key)}`);
    const { value, info } = c.value(type, `metadata ${JSON.stringify(key)}`);
    metadata.set(key, value);
    types.set(key, info);
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  if (metadata.has("general.alignment")) {
    const a = metadata.get("general.alignment");
    if (types.get("general.alignment")!.type !== GGUFValueType.UINT32)
      c.fail(
        `general.alignment must be a u32 (it is of value type ${GGUFValueType[types.get("general.alignment")!.type]})`,
      );
    if (typeof a !== "number" || a === 0 || (a & (a - 1)) !== 0)
      c.fail(`general.alignment is ${a}, not a power of two`);
    alignment = a as number;
  }

  interface Raw {
    name: string;
    dims: number[];
    type: number;
    offset: bigint;
  }
  const raws: Raw[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = c.string(`the name of tensor ${i}`);
    const what = `tensor ${JSON.stringify(name)}`;
    if (names.has(name)) c.fail(`tensor name ${JSON.stringify(name)} appears twice`);
    names.add(name);
    const nDims = c.u32(`the n_dims of ${what}`);
    if (nDims > GGML_MAX_DIMS)
      c.fail(`${what} has ${nDims} dimensions (ggml allows at most ${GGML_MAX_DIMS})`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) {
      const ne = c.u64(`ne[${d}] of ${what}`);
      if (ne > BigInt(Number.MAX_SAFE_INTEGER))
        c.fail(`${what} has ne[${d}] = ${ne}, far more elements than the file holds`);
      dims.push(Number(ne));
    }
    const type = c.u32(`the type of ${what}`);
    const offset = c.u64(`the offset of ${what}`);
    raws.push({ name, dims, type, offset });
  }
  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  if (tensorCount > 0 && dataOffset > size)
    c.fail(
      `the data section would start at byte ${dataOffset}, past the end of the ${size}-byte file; the file is truncated`,
    );

  const problems: string[] = [];
  const tensors: GGUFTensorInfo[] = [];
  const dataBytes = size - dataOffset;
  for (const r of raws) {
    const what = `tensor ${JSON.stringify(r.name)}`;
    if (!(r.type in GGMLType)) {
      problems.push(`${what} has unknown tensor type ${r.type}`);
      continue;
    }
    const block = GGML_BLOCK[r.type as GGMLType];
    if (!block) {
      problems.push(`${what} has tensor type ${ggmlTypeName(r.type)}, which this reader cannot size`);
      continue;
    }
    let elements = 1;
    let overflow = false;
    for (const ne of r.dims) {
      elements *= ne;
      if (elements > Number.MAX_SAFE_INTEGER) overflow = true;
    }
    const row = r.dims[0] ?? 1;
    if (overflow) {
      problems.push(`${what} has shape [${r.dims.join(", ")}] (ggml order), whose element count overflows`);
      continue;
    }
    if (row % block.elements !== 0) {
      problems.push(
        `${what} has rows of ${row} elements, not a multiple of the ${ggmlTypeName(r.type)} block size ${block.elements}`,
      );
      continue;
    }
    const bytes = (elements / block.elements) * block.bytes;
    if (r.offset % BigInt(alignment) !== 0n) {
      problems.push(`${what} has offset ${r.offset}, not a multiple of the alignment ${alignment}`);
      continue;
    }
    if (r.offset > BigInt(dataBytes) || bytes > dataBytes - Number(r.offset)) {
      problems.push(
        `${what} (${bytes} bytes at data offset ${r.offset}) ends past the end of the file (the data section has ${dataBytes} bytes); the file is truncated`,
      );
      continue;
    }
    tensors.push({
      name: r.name,
      dims: r.dims,
      shape: r.dims.length ? [...r.dims].reverse() : [],
      type: r.type as GGMLType,
      offset: dataOffset + Number(r.offset),
      bytes,
      elements,
    });
  }
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const t = sorted[i]!;
    if (t.offset < prev.offset + prev.bytes && t.bytes > 0 && prev.bytes > 0)
      problems.push(`tensors ${JSON.stringify(prev.name)} and ${JSON.stringify(t.name)} overlap`);
  }
  if (problems.length) c.fail(summary(problems));
  return { version, metadata, types, tensors, alignment, dataOffset, size };
}

/** A metadata string, or undefined when absent; throws GGUFError when present with another type. */
export function ggufString(h: GGUFHeader, key: string, source: string): string | undefined {
  const v = h.metadata.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new GGUFError(source, `metadata ${JSON.stringify(key)} must be a string`);
  return v;
}

/** A metadata number (any integer or float type; u64/i64 when safe), or undefined when absent. */
export function ggufNumber(h: GGUFHeader, key: string, source: string): number | undefined {
  const v = h.metadata.get(key);
  if (v === undefined) return undefined;
  if (typeof v === "bigint") {
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER))
      throw new GGUFError(source, `metadata ${JSON.stringify(key)} is ${v}, too large`);
    return Number(v);
  }
  if (typeof v !== "number") throw new GGUFError(source, `metadata ${JSON.stringify(key)} must be a number`);
  return v;
}

/** A metadata bool, or undefined when absent. */
export function ggufBool(h: GGUFHeader, key: string, source: string): boolean | undefined {
  const v = h.metadata.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw new GGUFError(source, `metadata ${JSON.stringify(key)} must be a bool`);
  return v;
}

/** A metadata array, or undefined when absent. */
export function ggufArray(h: GGUFHeader, key: string, source: string): GGUFValue[] | undefined {
  const v = h.metadata.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw new GGUFError(source, `metadata ${JSON.stringify(key)} must be an array`);
  return v;
}
