/** Safetensors dtypes and little-endian float32 conversions (round-to-nearest-even); pure, browser-safe. */

export type DType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export function isDType(value: unknown): value is DType {
  return typeof value === "string" && Object.hasOwn(DTYPE_SIZE, value);
}

/** True on little-endian hosts, where typed-array views can alias file bytes directly. */
/** The host stores numbers little-endian, as safetensors does (then its bytes can be viewed, not copied). */
export const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// Scratch cell for reinterpreting float32 bits.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half bits (0..0xffff) -> number. */
export function f16ToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (0x400 + mant) * 2 ** (exp - 25);
}

/** number -> IEEE half bits, rounding to nearest even; overflow gives Inf, NaN stays a (quiet) NaN. */
export function f32ToF16(value: number): number {
  f32[0] = value; // double -> float -> half is still correctly rounded (24 >= 2 * 11 + 2 bits)
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: rounds to (signed) zero
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rem = m & ((half << 1) - 1);
    let h = m >>> shift;
    if (rem > half || (rem === half && h & 1)) h++; // may carry into the smallest normal, which is correct
    return sign | h;
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry into the exponent (up to Inf) is correct
  return h;
}

/** bfloat16 bits -> number (exact). */
export function bf16ToF32(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0]!;
}

/** number -> bfloat16 bits, rounding to nearest even; NaN stays a (quiet) NaN. */
export function f32ToBf16(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

let f16Table: Float32Array | undefined;

/** Decodes little-endian `dtype` bytes to float32; aligned F32 on a little-endian host is a view. */
export function decodeToFloat32(bytes: Uint8Array, dtype: DType): Float32Array {
  const size = DTYPE_SIZE[dtype];
  if (bytes.byteLength % size !== 0) {
    throw new Error(`decodeToFloat32: ${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  const n = bytes.byteLength / size;
  if (dtype === "F32" && HOST_LE && bytes.byteOffset % 4 === 0) {
    return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  switch (dtype) {
    case "F32":
      for (let i = 0; i < n; i++) out[i] = v.getFloat32(i * 4, true);
      break;
    case "F64":
      for (let i = 0; i < n; i++) out[i] = v.getFloat64(i * 8, true);
      break;
    case "F16": {
      if (!f16Table) {
        f16Table = new Float32Array(0x10000);
        for (let b = 0; b < 0x10000; b++) f16Table[b] = f16ToF32(b);
      }
      for (let i = 0; i < n; i++) out[i] = f16Table[v.getUint16(i * 2, true)]!;
      break;
    }
    case "BF16": {
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = v.getUint16(i * 2, true) << 16;
      break;
    }
    case "I64": // exact below 2^53, then rounded: plenty for float32
      for (let i = 0; i < n; i++) out[i] = v.getInt32(i * 8 + 4, true) * 2 ** 32 + v.getUint32(i * 8, true);
      break;
    case "I32":
      for (let i = 0; i < n; i++) out[i] = v.getInt32(i * 4, true);
      break;
    case "I16":
      for (let i = 0; i < n; i++) out[i] = v.getInt16(i * 2, true);
      break;
    case "I8":
      for (let i = 0; i < n; i++) out[i] = v.getInt8(i);
      break;
    case "U8":
      for (let i = 0; i < n; i++) out[i] = v.getUint8(i);
      break;
    case "BOOL":
      for (let i = 0; i < n; i++) out[i] = v.getUint8(i) ? 1 : 0;
      break;
  }
  return out;
}

/** Encodes float32 as little-endian `dtype` bytes; F32 on a little-endian host is a view of `data`. */
export function encodeFromFloat32(data: Float32Array, dtype: "F32" | "F16" | "BF16"): Uint8Array {
  if (dtype === "F32" && HOST_LE) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.length * DTYPE_SIZE[dtype]);
  const v = new DataView(out.buffer);
  if (dtype === "F32") for (let i = 0; i < data.length; i++) v.setFloat32(i * 4, data[i]!, true);
  else if (dtype === "F16")
    for (let i = 0; i < data.length; i++) v.setUint16(i * 2, f32ToF16(data[i]!), true);
  else for (let i = 0; i < data.length; i++) v.setUint16(i * 2, f32ToBf16(data[i]!), true);
  return out;
}

/** The 16-bit float formats a frozen weight can be stored in (`--base-dtype`). */
export type HalfDType = "bf16" | "f16";

/** 16-bit floats as raw bits (the kernels' `HalfArray` has this shape). */
export interface HalfBits {
  readonly dtype: HalfDType;
  readonly bits: Uint16Array;
}

/** float32 values -> 16-bit bits, rounding to nearest even (overflow to f16 gives Inf). */
export function float32ToHalf(values: Float32Array, dtype: HalfDType): Uint16Array {
  const out = new Uint16Array(values.length);
  const round = dtype === "bf16" ? f32ToBf16 : f32ToF16;
  for (let i = 0; i < values.length; i++) out[i] = round(values[i]!);
  return out;
}

/** 16-bit bits -> float32 values (exact). */
export function halfToFloat32(h: HalfBits): Float32Array {
  const n = h.bits.length;
  const out = new Float32Array(n);
  if (h.dtype === "bf16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = h.bits[i]! << 16;
  } else {
    if (!f16Table) {
      f16Table = new Float32Array(0x10000);
      for (let b = 0; b < 0x10000; b++) f16Table[b] = f16ToF32(b);
    }
    for (let i = 0; i < n; i++) out[i] = f16Table[h.bits[i]!]!;
  }
  return out;
}
