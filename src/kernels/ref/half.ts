/** 16-bit frozen weights in the reference backend: decode to f32 exactly, and bf16 rounding of the other operand. */
import { f32ToBf16, halfToFloat32 } from "../../tensor/dtype.js";
import type { HalfArray } from "../backend.js";

/** Elements [start, start + n) of a 16-bit weight as f32 (exact). */
export function decodeHalf(w: HalfArray, start = 0, n = w.bits.length - start): Float32Array {
  return halfToFloat32({ dtype: w.dtype, bits: w.bits.subarray(start, start + n) });
}

/** x rounded to bf16 (nearest even) and widened back: the operand a bf16 product really multiplies. */
export function roundToBf16(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < x.length; i++) bits[i] = f32ToBf16(x[i]!) << 16;
  return out;
}
