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
function transposed(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = w[i * cols + j]!;
  return out;
}

const FLOAT_OUT: Partial<Record<DType, "F32" | "F16" | "BF16">> = { F32: "F32", F16: "F16", BF16: "BF16" };
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
    return {
      name,
      dtype: (stored && FLOAT_OUT[stored]) || fallback,
      shape: flip ? [cols, rows] : [...t.shape],
      data: flip ? transposed(t.data, rows, cols) : t.data,
    };
  });
}
