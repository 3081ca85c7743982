/**
 * The Node side's random weights, written for the torch side to load: one weights.safetensors with
 * every parameter under its module path (Linear layout [out, in], LoRA A [r, in], B [out, r]) at its
 * initial value, plus the batch (bench.input_ids, bench.targets) and the generation prompt (bench.prompt).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type SerializableTensor, serializeSafetensors, type Tensor } from "../src/node.js";

const f32 = (name: string, shape: number[], data: Float32Array): SerializableTensor => ({
  name,
  dtype: "F32",
  shape,
  data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
});
const i32 = (name: string, shape: number[], data: Int32Array): SerializableTensor => ({
  name,
  dtype: "I32",
  shape,
  data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
});

export interface BenchBatch {
  ids: Int32Array;
  targets: Int32Array;
  prompt: Int32Array;
  shape: [number, number];
}

/**
 * Writes dir/weights.safetensors. `params` are the model's named parameters; `initial` replaces the
 * values of those that training changed (the LoRA matrices), so the file holds the step-0 state.
 */
export function writeBenchWeights(
  dir: string,
  params: [string, Tensor][],
  initial: Map<string, Float32Array>,
  batch: BenchBatch,
): void {
  const tensors = params.map(([name, t]) => f32(name, [...t.shape], initial.get(name) ?? t.data));
  tensors.push(
    i32("bench.input_ids", batch.shape, batch.ids),
    i32("bench.targets", batch.shape, batch.targets),
    i32("bench.prompt", [batch.prompt.length], batch.prompt),
  );
  const bytes = serializeSafetensors(tensors, { format: "lora-ts-bench", layout: "Linear [out, in]" });
  writeFileSync(join(dir, "weights.safetensors"), bytes);
}
