/**
 * Builds a model from config.json and checkpoint tensors. Checkpoint quirks (GPT-2's Conv1D
 * [in, out] layout, name prefixes, buffers that are not weights) come from the model family's rules.
 * Every missing tensor and shape mismatch is collected, then reported at once.
 * With a 16-bit `baseDtype`, Linear weights and embedding tables stored in that dtype keep their bits
 * (no f32 intermediate); the rest are converted after loading (castBaseWeights).
 */
import { buildModel, type CausalLM, modelFamily } from "../models/index.js";
import { type BaseDType, castBaseWeights } from "../nn/base-dtype.js";
import type { DType, HalfDType } from "../tensor/dtype.js";
import { shapeStr } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";
import { type SafetensorsTensor, tensorToFloat32 } from "./safetensors.js";

export interface LoadedModel {
  model: CausalLM;
  /** Checkpoint tensors no parameter claimed (transformers warns about these too). */
  unused: string[];
}

// w: [rows, cols] -> [cols, rows], in place (through a temporary copy), so an F32 tensor that is a
// view into the file's buffer stays there and the model does not hold two copies.
function transposeInPlace<A extends Float32Array | Uint16Array>(w: A, rows: number, cols: number): A {
  const src = w.slice();
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) w[j * rows + i] = src[i * cols + j]!;
  return w;
}

const HALF_OF: Partial<Record<DType, HalfDType>> = { BF16: "bf16", F16: "f16" };

// little-endian 16-bit tensor bytes -> a fresh Uint16Array of the bits
function halfBits(bytes: Uint8Array): Uint16Array {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint16Array(bytes.byteLength / 2);
  for (let i = 0; i < out.length; i++) out[i] = v.getUint16(i * 2, true);
  return out;
}

export interface LoadOptions {
  /** How to store the frozen Linear weights and embedding tables (default f32). */
  baseDtype?: BaseDType;
}

export function loadModelFromTensors(
  config: Record<string, unknown>,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
  source: string,
  opts: LoadOptions = {},
): LoadedModel {
  const baseDtype = opts.baseDtype ?? "f32";
  const rules = modelFamily(config, `${source}/config.json`).checkpoint;
  const errors: string[] = [];
  const claimed = new Set<string>();
  const model = buildModel(config, (name, shape, kind) => {
    const key = rules.names(name).find((k) => tensors.has(k));
    if (!key) {
      errors.push(`missing tensor "${name}" ${shapeStr(shape)}`);
      return Tensor.zeros(shape);
    }
    claimed.add(key);
    const entry = tensors.get(key)!;
    const transposed = rules.transposed(name);
    const stored = transposed ? [shape[1]!, shape[0]!] : shape;
    if (entry.shape.length !== stored.length || entry.shape.some((d, i) => d !== stored[i])) {
      errors.push(
        `tensor "${key}" has shape ${shapeStr(entry.shape)}, but config.json implies ${shapeStr(stored)}`,
      );
      return Tensor.zeros(shape);
    }
    const base = kind === "weight" || kind === "embedding";
    if (base && baseDtype !== "f32" && HALF_OF[entry.dtype] === baseDtype) {
      const bits = halfBits(entry.bytes);
      const dtype = baseDtype;
      return new Tensor(
        { dtype, bits: transposed ? transposeInPlace(bits, stored[0]!, stored[1]!) : bits },
        shape,
      );
    }
    let data = tensorToFloat32(entry);
    // a 16-bit model keeps no view into the file's buffer, so the buffer can be freed
    if (!base && baseDtype !== "f32" && data.buffer === entry.bytes.buffer) data = data.slice();
    return new Tensor(transposed ? transposeInPlace(data, stored[0]!, stored[1]!) : data, shape);
  });
  castBaseWeights(model, baseDtype);
  if (errors.length > 0) {
    const shown = errors.slice(0, 20).map((e) => `  - ${e}`);
    if (errors.length > 20) shown.push(`  ... and ${errors.length - 20} more`);
    throw new Error(
      `${source}: the weights do not fit config.json (${errors.length} problem${errors.length > 1 ? "s" : ""}):\n${shown.join("\n")}\nCheck that config.json and the safetensors files come from the same model.`,
    );
  }
  const unused = [...tensors.keys()].filter((k) => !claimed.has(k) && !rules.ignored(k));
  return { model, unused };
}
