/**
 * Dequantisation of ggml tensor data to f32, by the formulas of ggml's reference `dequantize_row_*`
 * (ggml-quants.c), in f32 arithmetic as the C code does (every product rounded to f32), for the types
 * llama.cpp's usual model files hold: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
 * Any other type is refused by name. Blocks are little-endian; scales `d`/`dmin` are f16.
 *
 * Block layouts (bytes):
 * - Q8_0 (32 values, 34): d, int8 qs[32]; y = d·q.
 * - Q4_0 (32, 18): d, qs[16]; y[j] = d·((qs[j] & 15) − 8), y[j+16] = d·((qs[j] >> 4) − 8).
 * - Q5_0 (32, 22): d, u32 qh, qs[16]; the 5th bit of y[j] is bit j of qh, of y[j+16] bit j+16; minus 16.
 * - Q5_1 (32, 24): d, m, u32 qh, qs[16]; as Q5_0 without the −16, y = d·q + m.
 * - Q4_K (256, 144): d, dmin, scales[12] (eight 6-bit scale/min pairs), qs[128]; per 64 values, two
 *   sub-blocks of 32: the low nibbles of 32 bytes, then their high nibbles; y = d·sc·q − dmin·m.
 * - Q5_K (256, 176): as Q4_K plus qh[32]: sub-block s takes its 5th bit from bit s of qh[l].
 * - Q6_K (256, 210): ql[128], qh[64], int8 scales[16], d; per 128 values, four runs of 32 whose 6-bit
 *   q is a nibble of ql with two bits of qh, minus 32; y = d·scale·q, a scale per 16 values.
 */
import { decodeToFloat32, f16ToF32 } from "../tensor/dtype.js";
import { GGML_BLOCK, GGMLType, ggmlTypeName } from "./gguf-types.js";

const f = Math.fround;

// f16 bits -> f32, one table for every block's scales (built on first use)
let f16Table: Float32Array | null = null;
function half(v: DataView, at: number): number {
  if (!f16Table) {
    f16Table = new Float32Array(0x10000);
    for (let b = 0; b < 0x10000; b++) f16Table[b] = f16ToF32(b);
  }
  return f16Table[v.getUint16(at, true)]!;
}

export const DEQUANTIZABLE: readonly GGMLType[] = [
  GGMLType.F32,
  GGMLType.F16,
  GGMLType.BF16,
  GGMLType.Q8_0,
  GGMLType.Q4_0,
  GGMLType.Q5_0,
  GGMLType.Q5_1,
  GGMLType.Q4_K,
  GGMLType.Q5_K,
  GGMLType.Q6_K,
];

/** Whether `dequantize` handles the type. */
export function canDequantize(type: number): boolean {
  return (DEQUANTIZABLE as readonly number[]).includes(type);
}

// 6-bit scale and min j (0..7) of a K-quant block's 12 scale bytes (ggml's get_scale_min_k4)
function scaleMin(s: Uint8Array, at: number, j: number): [number, number] {
  if (j < 4) return [s[at + j]! & 63, s[at + j + 4]! & 63];
  return [
    (s[at + j + 4]! & 0xf) | ((s[at + j - 4]! >> 6) << 4),
    (s[at + j + 4]! >> 4) | ((s[at + j]! >> 6) << 4),
  ];
}

const Q6_SCALES = new Float64Array(16);

type Kernel = (src: Uint8Array, v: DataView, at: number, out: Float32Array, o: number) => void;

const KERNELS: Partial<Record<GGMLType, Kernel>> = {
  [GGMLType.Q8_0]: (src, v, at, out, o) => {
    const d = half(v, at);
    for (let j = 0; j < 32; j++) out[o + j] = d * ((src[at + 2 + j]! << 24) >> 24);
  },
  [GGMLType.Q4_0]: (src, v, at, out, o) => {
    const d = half(v, at);
    for (let j = 0; j < 16; j++) {
      const q = src[at + 2 + j]!;
      out[o + j] = d * ((q & 0xf) - 8);
      out[o + j + 16] = d * ((q >> 4) - 8);
    }
  },
  [GGMLType.Q5_0]: (src, v, at, out, o) => {
    const d = half(v, at);
    const qh = v.getUint32(at + 2, true);
    for (let j = 0; j < 16; j++) {
      const q = src[at + 6 + j]!;
      out[o + j] = d * (((q & 0xf) | (((qh >>> j) & 1) << 4)) - 16);
      out[o + j + 16] = d * (((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16);
    }
  },
  [GGMLType.Q5_1]: (src, v, at, out, o) => {
    const d = half(v, at);
    const m = half(v, at + 2);
    const qh = v.getUint32(at + 4, true);
    for (let j = 0; j < 16; j++) {
      const q = src[at + 8 + j]!;
      out[o + j] = f(d * ((q & 0xf) | (((qh >>> j) & 1) << 4))) + m;
      out[o + j + 16] = f(d * ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4))) + m;
    }
  },
  [GGMLType.Q4_K]: (src, v, at, out, o) => {
    const d = half(v, at);
    const dmin = half(v, at + 2);
    const qs = at + 16;
    for (let g = 0; g < 4; g++) {
      const [sc1, m1] = scaleMin(src, at + 4, 2 * g);
      const [sc2, m2] = scaleMin(src, at + 4, 2 * g + 1);
      const d1 = f(d * sc1);
      const n1 = f(dmin * m1);
      const d2 = f(d * sc2);
      const n2 = f(dmin * m2);
      for (let l = 0; l < 32; l++) {
        const q = src[qs + 32 * g + l]!;
        out[o + 64 * g + l] = f(d1 * (q & 0xf)) - n1;
        out[o + 64 * g + 32 + l] = f(d2 * (q >> 4)) - n2;
      }
    }
  },
  [GGMLType.Q5_K]: (src, v, at, out, o) => {
    const d = half(v, at);
    const dmin = half(v, at + 2);
    const qh = at + 16;
    const qs = at + 48;
    for (let g = 0; g < 4; g++) {
      const [sc1, m1] = scaleMin(src, at + 4, 2 * g);
      const [sc2, m2] = scaleMin(src, at + 4, 2 * g + 1);
      const d1 = f(d * sc1);
      const n1 = f(dmin * m1);
      const d2 = f(d * sc2);
      const n2 = f(dmin * m2);
      for (let l = 0; l < 32; l++) {
        const q = src[qs + 32 * g + l]!;
        const h = src[qh + l]!;
        out[o + 64 * g + l] = f(d1 * ((q & 0xf) + ((h >> (2 * g)) & 1) * 16)) - n1;
        out[o + 64 * g + 32 + l] = f(d2 * ((q >> 4) + ((h >> (2 * g + 1)) & 1) * 16)) - n2;
      }
    }
  },
  [GGMLType.Q6_K]: (src, v, at, out, o) => {
    const d = half(v, at + 208);
    const ds = Q6_SCALES; // d·scale, each rounded to f32 as the C product is
    for (let i = 0; i < 16; i++) ds[i] = f(d * ((src[at + 192 + i]! << 24) >> 24));
    for (let n = 0; n < 2; n++) {
      const ql = at + 64 * n;
      const qh = at + 128 + 32 * n;
      const y = o + 128 * n;
      for (let l = 0; l < 32; l++) {
        const is = 8 * n + (l >> 4);
        const h = src[qh + l]!;
        const a = src[ql + l]!;
        const b = src[ql + l + 32]!;
        out[y + l] = ds[is]! * (((a & 0xf) | ((h & 3) << 4)) - 32);
        out[y + l + 32] = ds[is + 2]! * (((b & 0xf) | (((h >> 2) & 3) << 4)) - 32);
        out[y + l + 64] = ds[is + 4]! * (((a >> 4) | (((h >> 4) & 3) << 4)) - 32);
        out[y + l + 96] = ds[is + 6]! * (((b >> 4) | (((h >> 6) & 3) << 4)) - 32);
      }
    }
  },
};

/**
 * The f32 values of `elements` values of ggml type `type` stored in `bytes` (a whole number of
 * blocks). Throws, naming `what` (the tensor) and the type, for a type it does not handle.
 */
export function dequantize(
  bytes: Uint8Array,
  type: GGMLType,
  elements: number,
  what = "tensor",
): Float32Array {
  if (!canDequantize(type))
    throw new Error(
      `${what} has tensor type ${ggmlTypeName(type)}, which cannot be loaded; supported: ${DEQUANTIZABLE.map(ggmlTypeName).join(", ")}. Convert or quantise the model to one of these (e.g. llama-quantize ... Q4_K_M)`,
    );
  const block = GGML_BLOCK[type]!;
  const need = (elements / block.elements) * block.bytes;
  if (elements % block.elements !== 0 || bytes.byteLength !== need)
    throw new Error(
      `${what}: ${bytes.byteLength} bytes do not hold ${elements} ${ggmlTypeName(type)} values (${need} bytes)`,
    );
  // (an aligned F32 tensor on a little-endian host is a view of `bytes`)
  if (type === GGMLType.F32) return decodeToFloat32(bytes, "F32");
  if (type === GGMLType.F16) return decodeToFloat32(bytes, "F16");
  if (type === GGMLType.BF16) return decodeToFloat32(bytes, "BF16");
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(elements);
  const kernel = KERNELS[type]!;
  const blocks = elements / block.elements;
  for (let b = 0; b < blocks; b++) kernel(bytes, v, b * block.bytes, out, b * block.elements);
  return out;
}
