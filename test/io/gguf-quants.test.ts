/** Dequantisation: hand-computed blocks of every type, and gguf-py's numpy dequantize on real and random blocks. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { test } from "node:test";
import { DEQUANTIZABLE, dequantize } from "../../src/io/gguf-quants.js";
import { GGMLType } from "../../src/io/gguf-types.js";
import { fixturesDir } from "../helpers.js";

// f16 bits of a few exact values
const H = { "0.5": 0x3800, "1": 0x3c00, "2": 0x4000, "0.25": 0x3400, "-1": 0xbc00 } as const;

class Block {
  bytes: number[] = [];
  f16(bits: number) {
    this.bytes.push(bits & 0xff, bits >> 8);
    return this;
  }
  u8(...v: number[]) {
    for (const b of v) this.bytes.push(b & 0xff);
    return this;
  }
  u32(v: number) {
    return this.u8(v, v >>> 8, v >>> 16, v >>> 24);
  }
  get(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}
const range = (n: number, fn: (i: number) => number) => Array.from({ length: n }, (_, i) => fn(i));

test("Q8_0: y = d·q", () => {
  const qs = range(32, (j) => j * 8 - 128); // -128, -120, ..., 120
  const y = dequantize(
    new Block()
      .f16(H["0.5"])
      .u8(...qs)
      .get(),
    GGMLType.Q8_0,
    32,
  );
  assert.deepEqual(
    Array.from(y),
    range(32, (j) => 0.5 * (j * 8 - 128)),
  );
});

test("Q4_0: low nibbles are values 0-15, high nibbles 16-31, minus 8, times d", () => {
  const qs = range(16, (j) => j | ((15 - j) << 4));
  const y = dequantize(
    new Block()
      .f16(H["2"])
      .u8(...qs)
      .get(),
    GGMLType.Q4_0,
    32,
  );
  assert.deepEqual(Array.from(y), [...range(16, (j) => 2 * (j - 8)), ...range(16, (j) => 2 * (15 - j - 8))]);
});

test("Q5_0 and Q5_1: bit j of qh is the fifth bit of value j (0-31)", () => {
  const qh = 0b1010_0000_0000_0001_1000_0000_0000_0011; // values 0, 1, 15, 16, 29, 31 get 16 added
  const qs = range(16, (j) => (j % 16) | (((j + 3) % 16) << 4));
  const q = [...range(16, (j) => j % 16), ...range(16, (j) => (j + 3) % 16)].map(
    (v, i) => v + (((qh >>> i) & 1) << 4),
  );
  assert.deepEqual(q.slice(0, 2), [16, 17]);
  const y0 = dequantize(
    new Block()
      .f16(H["0.25"])
      .u32(qh)
      .u8(...qs)
      .get(),
    GGMLType.Q5_0,
    32,
  );
  assert.deepEqual(
    Array.from(y0),
    q.map((v) => 0.25 * (v - 16)),
  );
  const y1 = dequantize(
    new Block()
      .f16(H["0.5"])
      .f16(H["-1"])
      .u32(qh)
      .u8(...qs)
      .get(),
    GGMLType.Q5_1,
    32,
  );
  assert.deepEqual(
    Array.from(y1),
    q.map((v) => 0.5 * v - 1),
  );
});

// Q4_K/Q5_K scales: sub-block j < 4 takes sc = s[j] & 63, m = s[j+4] & 63; j >= 4 takes
// sc = (s[j+4] & 15) | (s[j-4] >> 6) << 4 and m = (s[j+4] >> 4) | (s[j] >> 6) << 4.
const SCALES = [1 | (1 << 6), 2, 3, 4 | (3 << 6), 5, 6 | (2 << 6), 7, 8, 0x21, 0x43, 0x65, 0x87];
//   sub-block:    0   1   2   3   4       5   6       7
const SC = [1, 2, 3, 4, 1 | 16, 3, 5, 7 | 48];
const MIN = [5, 6, 7, 8, 2, 4 | 32, 6, 8];

test("Q4_K: eight sub-blocks of 32 with 6-bit scales and mins; y = d·sc·q − dmin·m", () => {
  const qs = range(128, (i) => (i % 16) | ((15 - (i % 16)) << 4));
  const bytes = new Block()
    .f16(H["0.5"])
    .f16(H["0.25"])
    .u8(...SCALES, ...qs)
    .get();
  const y = dequantize(bytes, GGMLType.Q4_K, 256);
  const want: number[] = [];
  for (let g = 0; g < 4; g++) {
    for (let l = 0; l < 32; l++) want.push(0.5 * SC[2 * g]! * (l % 16) - 0.25 * MIN[2 * g]!);
    for (let l = 0; l < 32; l++) want.push(0.5 * SC[2 * g + 1]! * (15 - (l % 16)) - 0.25 * MIN[2 * g + 1]!);
  }
  assert.deepEqual(Array.from(y), want);
});

test("Q5_K: as Q4_K, the fifth bit of sub-block s from bit s of qh[l]", () => {
  const qh = range(32, (l) => (l * 37) & 0xff);
  const qs = range(128, (i) => (i * 7) & 0xff);
  const bytes = new Block()
    .f16(H["1"])
    .f16(H["0.5"])
    .u8(...SCALES, ...qh, ...qs)
    .get();
  const y = dequantize(bytes, GGMLType.Q5_K, 256);
  const want: number[] = [];
  for (let g = 0; g < 4; g++) {
    for (let l = 0; l < 32; l++)
      want.push(SC[2 * g]! * ((qs[32 * g + l]! & 15) + ((qh[l]! >> (2 * g)) & 1) * 16) - 0.5 * MIN[2 * g]!);
    for (let l = 0; l < 32; l++)
      want.push(
        SC[2 * g + 1]! * ((qs[32 * g + l]! >> 4) + ((qh[l]! >> (2 * g + 1)) & 1) * 16) -
          0.5 * MIN[2 * g + 1]!,
      );
  }
  assert.deepEqual(Array.from(y), want);
});

test("Q6_K: 6-bit values from a nibble of ql and two bits of qh, minus 32, an int8 scale per 16", () => {
  const ql = range(128, (i) => (i * 11 + 3) & 0xff);
  const qh = range(64, (i) => (i * 29 + 1) & 0xff);
  const sc = range(16, (i) => i - 8); // int8 scales -8..7
  const bytes = new Block()
    .u8(...ql, ...qh, ...sc.map((s) => s & 0xff))
    .f16(H["0.25"])
    .get();
  const y = dequantize(bytes, GGMLType.Q6_K, 256);
  // value i of the block: half n = i / 128, run r = (i % 128) / 32, l = i % 32
  const want = range(256, (i) => {
    const n = i >> 7;
    const r = (i & 127) >> 5;
    const l = i & 31;
    const lowByte = ql[64 * n + l + (r & 1) * 32]!;
    const low = r < 2 ? lowByte & 15 : lowByte >> 4;
    const high = (qh[32 * n + l]! >> (2 * r)) & 3;
    const scale = sc[8 * n + (l >> 4) + 2 * r]!;
    return 0.25 * scale * ((low | (high << 4)) - 32);
  });
  assert.deepEqual(Array.from(y), want);
});

test("F32, F16 and BF16 decode little-endian", () => {
  const b = new Block().u8(0, 0, 0x80, 0x3f).get(); // 1.0f
  assert.deepEqual(Array.from(dequantize(b, GGMLType.F32, 1)), [1]);
  assert.deepEqual(
    Array.from(dequantize(new Block().f16(H["-1"]).f16(0x3555).get(), GGMLType.F16, 2)),
    [-1, 0.333251953125],
  );
  assert.deepEqual(
    Array.from(dequantize(new Block().f16(0x3f80).f16(0xc040).get(), GGMLType.BF16, 2)),
    [1, -3],
  );
});

test("every type equals gguf-py's numpy dequantize (real Q8_0/Q4_0/Q5_x blocks, random K-quant blocks)", () => {
  const fx: Record<string, { type: number; elements: number; bytes: string; values: number[] }> = JSON.parse(
    readFileSync(resolve(fixturesDir, "gguf/quants.json"), "utf8"),
  );
  assert.equal(Object.keys(fx).length, DEQUANTIZABLE.length - 1); // all but F32
  for (const [name, c] of Object.entries(fx)) {
    const bytes = new Uint8Array(Buffer.from(c.bytes, "base64"));
    const y = dequantize(bytes, c.type, c.elements, name);
    let worst = 0;
    for (let i = 0; i < y.length; i++)
      worst = Math.max(worst, Math.abs(y[i]! - c.values[i]!) / Math.max(1, Math.abs(c.values[i]!)));
    assert.ok(worst <= 2 ** -23, `${name}: worst relative difference ${worst}`);
  }
});

test("other types are refused by name; a wrong byte count is refused", () => {
  assert.throws(
    () => dequantize(new Uint8Array(20), GGMLType.Q4_1, 32, "blk.0.attn_q.weight"),
    /blk\.0\.attn_q\.weight has tensor type Q4_1, which cannot be loaded; supported: F32, F16, BF16, Q8_0/,
  );
  assert.throws(() => dequantize(new Uint8Array(66), GGMLType.IQ2_XXS, 256), /tensor type IQ2_XXS/);
  assert.throws(
    () => dequantize(new Uint8Array(33), GGMLType.Q8_0, 32),
    /33 bytes do not hold 32 Q8_0 values \(34 bytes\)/,
  );
});
