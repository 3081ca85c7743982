/** Tests for dtype sizes and f16/bf16/f32 conversions (rounding, edge values, array decode/encode). */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  bf16ToF32,
  DTYPE_SIZE,
  decodeToFloat32,
  encodeFromFloat32,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  isDType,
} from "../../src/tensor/dtype.js";

test("dtype sizes and isDType", () => {
  assert.deepEqual(DTYPE_SIZE, {
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
  });
  assert.ok(isDType("BF16"));
  assert.ok(!isDType("U16"));
  assert.ok(!isDType("toString"));
});

test("f32ToF16 edge values", () => {
  const cases: Array<[number, number]> = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff], // largest finite half
    [65519, 0x7bff], // just below the halfway point to 65536
    [65520, 0x7c00], // halfway: ties to even, which is Inf
    [1e6, 0x7c00],
    [Number.POSITIVE_INFINITY, 0x7c00],
    [Number.NEGATIVE_INFINITY, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [1e-5, 0x00a8], // subnormal, 167.77 units -> 168
    [1e-8, 0x0000], // below half the smallest subnormal
    [-1e-8, 0x8000],
    [2 ** -25, 0x0000], // exactly half the smallest subnormal: ties to even (0)
    [3 * 2 ** -25, 0x0002], // 1.5 units: ties to even (2)
    [2 ** -25 * 1.0001, 0x0001],
    [1 + 2 ** -11, 0x3c00], // tie between 1 and 1+2^-10: even is 1
    [1 + 3 * 2 ** -11, 0x3c02], // tie: even is 1+2^-9
    [2049, 0x6800], // tie between 2048 and 2050: even is 2048
    [2051, 0x6802], // tie between 2050 and 2052: even is 2052
    [(1 + 2 ** -11) * (1 + 2 ** -20), 0x3c01], // just above a tie rounds up
  ];
  for (const [value, bits] of cases) {
    assert.equal(f32ToF16(value), bits, `f32ToF16(${value}) = 0x${f32ToF16(value).toString(16)}`);
  }
  const nan = f32ToF16(Number.NaN);
  assert.equal(nan & 0x7c00, 0x7c00);
  assert.notEqual(nan & 0x3ff, 0);
  assert.ok(Number.isNaN(f16ToF32(nan)));
});

test("f16ToF32 edge values and exhaustive round trip", () => {
  assert.equal(f16ToF32(0x7bff), 65504);
  assert.ok(Object.is(f16ToF32(0x8000), -0));
  assert.equal(f16ToF32(0x0001), 2 ** -24);
  assert.equal(f16ToF32(0x03ff), 1023 * 2 ** -24);
  assert.equal(f16ToF32(0x7c00), Number.POSITIVE_INFINITY);
  assert.equal(f16ToF32(0xfc00), Number.NEGATIVE_INFINITY);
  assert.ok(Number.isNaN(f16ToF32(0x7e00)));
  assert.ok(Number.isNaN(f16ToF32(0xfc01)));
  for (let b = 0; b < 0x10000; b++) {
    const v = f16ToF32(b);
    if (Number.isNaN(v)) continue;
    assert.equal(f32ToF16(v), b, `half 0x${b.toString(16)} -> ${v} -> back`);
  }
});

test("bf16 edge values, rounding and exhaustive round trip", () => {
  const cases: Array<[number, number]> = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3f80],
    [-1, 0xbf80],
    [Number.POSITIVE_INFINITY, 0x7f80],
    [Number.NEGATIVE_INFINITY, 0xff80],
    [1 + 2 ** -8, 0x3f80], // tie between 1 and 1+2^-7: even is 1
    [1 + 3 * 2 ** -8, 0x3f82], // tie: even is 1+2^-6
    [1 + 2 ** -8 + 2 ** -20, 0x3f81], // just above a tie rounds up
    [3.4028234663852886e38, 0x7f80], // float32 max rounds up to Inf
    [1e-40, 0x0001], // float32 subnormal stays subnormal
  ];
  for (const [value, bits] of cases) {
    assert.equal(f32ToBf16(value), bits, `f32ToBf16(${value}) = 0x${f32ToBf16(value).toString(16)}`);
  }
  const tiny = bf16ToF32(f32ToBf16(1e-8));
  assert.ok(Math.abs(tiny - 1e-8) <= 1e-8 * 2 ** -8, `bf16(1e-8) = ${tiny}`);
  assert.ok(Object.is(bf16ToF32(0x8000), -0));
  assert.ok(Number.isNaN(bf16ToF32(f32ToBf16(Number.NaN))));
  assert.equal(f32ToBf16(Number.NaN) & 0x7f80, 0x7f80);
  for (let b = 0; b < 0x10000; b++) {
    const v = bf16ToF32(b);
    if (Number.isNaN(v)) continue;
    assert.equal(f32ToBf16(v), b, `bf16 0x${b.toString(16)} -> ${v} -> back`);
  }
});

test("decodeToFloat32: F32 view when aligned, copy when not", () => {
  const values = new Float32Array([1.5, -2, 3.25]);
  const raw = new Uint8Array(values.buffer);
  const aligned = decodeToFloat32(raw, "F32");
  assert.equal(aligned.buffer, values.buffer);
  assert.deepEqual([...aligned], [1.5, -2, 3.25]);

  const shifted = new Uint8Array(13);
  shifted.set(raw, 1);
  const copy = decodeToFloat32(shifted.subarray(1), "F32");
  assert.notEqual(copy.buffer, shifted.buffer);
  assert.deepEqual([...copy], [1.5, -2, 3.25]);
  assert.throws(() => decodeToFloat32(new Uint8Array(6), "F32"), /not a whole number of F32 elements/);
});

test("decodeToFloat32: half, bfloat16, float64 and integer dtypes (little-endian)", () => {
  const le = (bytes: number[]) => new Uint8Array(bytes);
  assert.deepEqual([...decodeToFloat32(le([0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b]), "F16")], [1, -2, 65504]);
  assert.deepEqual([...decodeToFloat32(le([0x80, 0x3f, 0xc0, 0xbf]), "BF16")], [1, -1.5]);
  const f64 = new Uint8Array(new Float64Array([0.5, -1e300]).buffer);
  assert.deepEqual([...decodeToFloat32(f64, "F64")], [0.5, Number.NEGATIVE_INFINITY]);
  const i64 = new Uint8Array(new BigInt64Array([-3n, 2n ** 40n]).buffer);
  assert.deepEqual([...decodeToFloat32(i64, "I64")], [-3, 2 ** 40]);
  const i32 = new Uint8Array(new Int32Array([-7, 123456]).buffer);
  assert.deepEqual([...decodeToFloat32(i32, "I32")], [-7, 123456]);
  assert.deepEqual([...decodeToFloat32(le([0xff, 0xff, 0x00, 0x01]), "I16")], [-1, 256]);
  assert.deepEqual([...decodeToFloat32(le([0xff, 0x05]), "I8")], [-1, 5]);
  assert.deepEqual([...decodeToFloat32(le([0xff, 0x05]), "U8")], [255, 5]);
  assert.deepEqual([...decodeToFloat32(le([0, 1, 2]), "BOOL")], [0, 1, 1]);
});

test("encodeFromFloat32 writes little-endian F32/F16/BF16", () => {
  const data = new Float32Array([1, -2]);
  assert.deepEqual([...encodeFromFloat32(data, "F32")], [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
  assert.deepEqual([...encodeFromFloat32(data, "F16")], [0x00, 0x3c, 0x00, 0xc0]);
  assert.deepEqual([...encodeFromFloat32(data, "BF16")], [0x80, 0x3f, 0x00, 0xc0]);
  const odd = new Float32Array([0.1, 1 / 3, -7.77, 1e-6]);
  for (const dtype of ["F16", "BF16"] as const) {
    const back = decodeToFloat32(encodeFromFloat32(odd, dtype), dtype);
    const one =
      dtype === "F16" ? (x: number) => f16ToF32(f32ToF16(x)) : (x: number) => bf16ToF32(f32ToBf16(x));
    assert.deepEqual([...back], [...odd].map(one));
  }
});
