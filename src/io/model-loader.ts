/**
 * Builds a model from config.json and checkpoint tensors. Checkpoint quirks (GPT-2's Conv1D
 * [in, out] layout, name prefixes, buffers that are not weights) come from the model family's rules.
 * Every missing tensor and shape mismatch is collected, then reported at once.
 */
import { buildModel, type CausalLM, modelFamily } from "../models/index.js";
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
function transposeInPlace(w: Float32Array, rows: number, cols: number): Float32Array {
  const src = w.slice();
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) w[j * rows + i] = src[i * cols + j]!;
  return w;
}

export function loadModelFromTensors(
  config: Record<string, unknown>,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
  source: string,
): LoadedModel {
  const rules = modelFamily(config, `${source}/config.json`).checkpoint;
  const errors: string[] = [];
  const claimed = new Set<string>();
  const model = buildModel(config, (name, shape) => {
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
    const data = tensorToFloat32(entry);
    return new Tensor(transposed ? transposeInPlace(data, stored[0]!, stored[1]!) : data, shape);
  });
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
