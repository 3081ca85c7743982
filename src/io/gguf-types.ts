/**
 * The numbers of the GGUF container (version 3, as ggml's gguf.cpp and the `gguf` Python package
 * define them): metadata value types, and the ggml tensor types with their block layout. The reader
 * (`gguf.ts`) and the writer (`gguf-write.ts`) both use this one table.
 */

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types (gguf_type). */
export enum GGUFValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** ggml tensor types (ggml_type). Numbers that ggml retired (4, 5, 31-33, 36-38) are absent. */
export enum GGMLType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
}

/**
 * Elements per block and bytes per block (ggml's type_traits blck_size / type_size) for the types
 * whose size this code knows. A row's length must be a multiple of the block size.
 */
export const GGML_BLOCK: Partial<Record<GGMLType, { elements: number; bytes: number }>> = {
  [GGMLType.F32]: { elements: 1, bytes: 4 },
  [GGMLType.F16]: { elements: 1, bytes: 2 },
  [GGMLType.BF16]: { elements: 1, bytes: 2 },
  [GGMLType.F64]: { elements: 1, bytes: 8 },
  [GGMLType.I8]: { elements: 1, bytes: 1 },
  [GGMLType.I16]: { elements: 1, bytes: 2 },
  [GGMLType.I32]: { elements: 1, bytes: 4 },
  [GGMLType.I64]: { elements: 1, bytes: 8 },
  [GGMLType.Q4_0]: { elements: 32, bytes: 18 }, // f16 d, 16 bytes of nibbles
  [GGMLType.Q4_1]: { elements: 32, bytes: 20 }, // f16 d, f16 m, 16 bytes of nibbles
  [GGMLType.Q5_0]: { elements: 32, bytes: 22 }, // f16 d, u32 high bits, 16 bytes of nibbles
  [GGMLType.Q5_1]: { elements: 32, bytes: 24 }, // f16 d, f16 m, u32 high bits, 16 bytes
  [GGMLType.Q8_0]: { elements: 32, bytes: 34 }, // f16 d, 32 int8
  [GGMLType.Q8_1]: { elements: 32, bytes: 36 }, // f16 d, f16 s, 32 int8
  [GGMLType.Q2_K]: { elements: 256, bytes: 84 },
  [GGMLType.Q3_K]: { elements: 256, bytes: 110 },
  [GGMLType.Q4_K]: { elements: 256, bytes: 144 }, // f16 d, f16 dmin, 12 bytes scales, 128 bytes nibbles
  [GGMLType.Q5_K]: { elements: 256, bytes: 176 }, // as Q4_K plus 32 bytes of high bits
  [GGMLType.Q6_K]: { elements: 256, bytes: 210 }, // 128 low nibbles, 64 high 2-bits, 16 int8 scales, f16 d
  [GGMLType.Q8_K]: { elements: 256, bytes: 292 }, // f32 d, 256 int8, 16 int16 sums
};

/** The type's name as ggml prints it ("Q4_K"), or `type N` for a number this table lacks. */
export function ggmlTypeName(type: number): string {
  return GGMLType[type] ?? `type ${type}`;
}
