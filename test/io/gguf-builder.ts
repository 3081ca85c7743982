/**
 * Builds GGUF bytes by hand for the reader's tests (version 3 layout, little-endian), with every field
 * overridable so a test can write what a hostile or broken file holds.
 */
import { GGUF_MAGIC, GGUFValueType } from "../../src/io/gguf-types.js";

export type KV = {
  key: string;
  type: GGUFValueType;
  value: unknown;
  arrayType?: GGUFValueType;
  keyBytes?: Uint8Array;
};

export interface TensorSpec {
  name: string;
  /** ne[], ggml order */
  dims: (number | bigint)[];
  type: number;
  /** relative to the data section; default: packed in order at the alignment */
  offset?: number | bigint;
  /** the tensor's bytes (default zeros of `bytes` length, or nothing) */
  data?: Uint8Array;
  bytes?: number;
  nDims?: number;
}

export interface GGUFSpec {
  magic?: number;
  version?: number;
  kvs?: KV[];
  tensors?: TensorSpec[];
  alignment?: number;
  tensorCount?: bigint;
  kvCount?: bigint;
}

class Bytes {
  parts: number[] = [];
  u8(v: number) {
    this.parts.push(v & 0xff);
  }
  u32(v: number) {
    for (let i = 0; i < 4; i++) this.u8(v >>> (8 * i));
  }
  u64(v: bigint | number) {
    let b = BigInt.asUintN(64, BigInt(v));
    for (let i = 0; i < 8; i++) {
      this.u8(Number(b & 0xffn));
      b >>= 8n;
    }
  }
  raw(bytes: Uint8Array) {
    for (const b of bytes) this.parts.push(b);
  }
  string(s: string) {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.raw(b);
  }
  value(type: GGUFValueType, v: unknown, arrayType?: GGUFValueType) {
    const dv = new DataView(new ArrayBuffer(8));
    const put = (n: number) => this.raw(new Uint8Array(dv.buffer, 0, n));
    switch (type) {
      case GGUFValueType.UINT8:
      case GGUFValueType.INT8:
      case GGUFValueType.BOOL:
        return this.u8(Number(v));
      case GGUFValueType.UINT16:
      case GGUFValueType.INT16:
        dv.setUint16(0, Number(v) & 0xffff, true);
        return put(2);
      case GGUFValueType.UINT32:
      case GGUFValueType.INT32:
        return this.u32(Number(v));
      case GGUFValueType.FLOAT32:
        dv.setFloat32(0, Number(v), true);
        return put(4);
      case GGUFValueType.FLOAT64:
        dv.setFloat64(0, Number(v), true);
        return put(8);
      case GGUFValueType.UINT64:
      case GGUFValueType.INT64:
        return this.u64(v as bigint);
      case GGUFValueType.STRING:
        return this.string(v as string);
      case GGUFValueType.ARRAY: {
        const items = v as unknown[];
        this.u32(arrayType!);
        this.u64(items.length);
        for (const it of items) this.value(arrayType!, it);
        return;
      }
      default:
        this.u32(0);
    }
  }
  pad(alignment: number) {
    while (this.parts.length % alignment) this.u8(0);
  }
}

/** The bytes of a GGUF file as `spec` describes it. */
export function buildGGUF(spec: GGUFSpec): Uint8Array {
  const w = new Bytes();
  const kvs = spec.kvs ?? [];
  const tensors = spec.tensors ?? [];
  const alignment = spec.alignment ?? 32;
  w.u32(spec.magic ?? GGUF_MAGIC);
  w.u32(spec.version ?? 3);
  w.u64(spec.tensorCount ?? BigInt(tensors.length));
  w.u64(spec.kvCount ?? BigInt(kvs.length));
  for (const kv of kvs) {
    if (kv.keyBytes) {
      w.u64(kv.keyBytes.length);
      w.raw(kv.keyBytes);
    } else w.string(kv.key);
    w.u32(kv.type);
    w.value(kv.type, kv.value, kv.arrayType);
  }
  let at = 0;
  const placed: { offset: bigint; data: Uint8Array }[] = [];
  for (const t of tensors) {
    const data = t.data ?? new Uint8Array(t.bytes ?? 0);
    const offset = t.offset !== undefined ? BigInt(t.offset) : BigInt(at);
    if (t.offset === undefined) at = Math.ceil((at + data.length) / alignment) * alignment;
    placed.push({ offset, data });
    w.string(t.name);
    w.u32(t.nDims ?? t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(t.type);
    w.u64(offset);
  }
  if (tensors.length) {
    w.pad(alignment);
    const base = w.parts.length;
    for (const p of placed) {
      if (p.offset > BigInt(1 << 24)) continue; // a hostile offset: its data is not written
      const start = base + Number(p.offset);
      while (w.parts.length < start) w.u8(0);
      for (let i = 0; i < p.data.length; i++) w.parts[start + i] = p.data[i]!;
    }
  }
  return Uint8Array.from(w.parts);
}

export const f32Bytes = (values: number[]) => new Uint8Array(Float32Array.from(values).buffer);
