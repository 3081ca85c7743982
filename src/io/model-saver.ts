/**
 * A model's weights as Hugging Face checkpoint tensors: the inverse of model-loader. Names, layouts
 * (GPT-2's Conv1D [in, out]) and dtypes follow the model family's checkpoint rules and, when given,
 * the checkpoint the model was loaded from, so a saved folder loads wherever the original did.
 */
import { modelFamily } from "../models/index.js";
import type { Module } from "../nn/module.js";
import type { DType } from "../tensor/dtype.js";
import type { SerializableTensor } from "./safetensors.js";

// w: [rows, cols] -> a new [cols, rows]
function transposed<A extends Float32Array | Uint16Array>(w: A, rows: number, cols: number): A {
  const out = new (w.constructor as new (n: number) => A)(w.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = w[i * cols + j]!;
  return out;
}

const FLOAT_OUT: Partial<Record<DType, "F32" | "F16" | "BF16">> = { F32: "F32", F16: "F16", BF16: "BF16" };
const HALF_DTYPE = { bf16: "BF16", f16: "F16" } as const;

// 16-bit values -> their little-endian bytes
function littleEndianBytes(bits: Uint16Array): Uint8Array {
  const out = new Uint8Array(bits.length * 2);
  const v = new DataView(out.buffer);
  for (let i = 0; i < bits.length; i++) v.setUint16(i * 2, bits[i]!, true);
  return out;
}

const TORCH_DTYPES: Record<string, "F32" | "F16" | "BF16"> = {
  float32: "F32",
  float16: "F16",
  bfloat16: "BF16",
};

/**
 * Every parameter of `model` (tied ones once), named as in the source checkpoint when `source`
 * lists its tensors, else by the family's first name. The dtype is the source tensor's, else
 * config.torch_dtype's, else F32. The model must hold plain Linear layers (fuse LoRA first).
 */
export function modelTensors(
  model: Module,
  config: Record<string, unknown>,
  source?: ReadonlyMap<string, { dtype: DType }>,
): SerializableTensor[] {
  const rules = modelFamily(config).checkpoint;
  const fallback = TORCH_DTYPES[String(config.torch_dtype)] ?? "F32";
  return model.namedParameters().map(([param, t]) => {
    if (/\.(lora_[AB]|base_layer\.)/.test(param))
      throw new Error(`"${param}" is a LoRA parameter: fuse the adapter into the model before saving it`);
    const names = rules.names(param);
    const name = names.find((n) => source?.has(n)) ?? names[0]!;
    const stored = source?.get(name)?.dtype;
    const [rows, cols] = t.shape as [number, number];
    const flip = rules.transposed(param);
    const dtype = (stored && FLOAT_OUT[stored]) || fallback;
    const shape = flip ? [cols, rows] : [...t.shape];
    if (t.half && HALF_DTYPE[t.half.dtype] === dtype) {
      // a 16-bit weight saved in its own dtype: its bits, exactly
      const bits = flip ? transposed(t.half.bits, rows, cols) : t.half.bits;
      return { name, dtype, shape, data: littleEndianBytes(bits) };
    }
    const data = t.half ? t.toFloat32().data : t.data;
    return { name, dtype, shape, data: flip ? transposed(data, rows, cols) : data };
  });
}
