/**
 * Training checkpoint files besides the weights (browser-safe):
 *   optimizer.safetensors  one F32 tensor "<parameter>.<buffer>" per optimizer buffer
 *                          (metadata: format "pt", optimizer kind, step)
 *   trainer_state.json     step, tokens, elapsed_s, data position, dropout RNG state, and the run's
 *                          settings (so a resume can refuse a different model, data or config)
 * The types here mirror train/'s Snapshot structurally (io sits above train in the layers).
 */
import type { RngState } from "../tensor/random.js";
import {
  describeNonFinite,
  type SafetensorsFile,
  serializeSafetensors,
  tensorToFloat32,
} from "./safetensors.js";

export const CHECKPOINT_FORMAT = "lora-ts-checkpoint";
export const CHECKPOINT_VERSION = 1;

export interface CheckpointState {
  step: number;
  tokens: number;
  elapsedS: number;
  data: { epoch: number; cursor: number };
  rng: { s: RngState; spare: number | null } | null;
  optimizer: { kind: string; step: number; buffers: Record<string, Record<string, Float32Array>> };
}

/** The checkpoint's own files: name -> contents. `run` is stored as given (JSON). */
export function checkpointFiles(
  s: CheckpointState,
  run: Record<string, unknown>,
): Record<string, Uint8Array | string> {
  const tensors = Object.entries(s.optimizer.buffers).flatMap(([param, bufs]) =>
    Object.entries(bufs).map(([buf, data]) => ({
      name: `${param}.${buf}`,
      dtype: "F32" as const,
      shape: [data.length],
      data,
    })),
  );
  const state = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    step: s.step,
    tokens: s.tokens,
    elapsed_s: s.elapsedS,
    data: s.data,
    rng: s.rng,
    run,
  };
  return {
    "optimizer.safetensors": serializeSafetensors(tensors, {
      format: "pt",
      optimizer: s.optimizer.kind,
      step: String(s.optimizer.step),
    }),
    "trainer_state.json": `${JSON.stringify(state, null, 2)}\n`,
  };
}

/** Reads trainer_state.json and optimizer.safetensors back; throws naming the file when they are not ours. */
export function parseCheckpoint(
  stateJson: Record<string, unknown>,
  optimizer: SafetensorsFile,
  source: string,
): CheckpointState & { run: Record<string, unknown> } {
  const fail = (what: string) =>
    new Error(`${source}: ${what}; it is not a checkpoint written by 'lora train' (or it is damaged)`);
  if (stateJson.format !== CHECKPOINT_FORMAT) throw fail("trainer_state.json has the wrong format field");
  if (stateJson.version !== CHECKPOINT_VERSION)
    throw fail(`trainer_state.json has version ${stateJson.version}, this build reads ${CHECKPOINT_VERSION}`);
  const int = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= 0;
  const data = stateJson.data as { epoch: number; cursor: number } | undefined;
  if (!int(stateJson.step) || !int(stateJson.tokens) || !data || !int(data.epoch) || !int(data.cursor))
    throw fail("trainer_state.json lacks step, tokens or data position");
  const kind = optimizer.metadata.optimizer;
  const step = Number(optimizer.metadata.step);
  if (!kind || !int(step)) throw fail("optimizer.safetensors lacks its optimizer/step metadata");
  const buffers: Record<string, Record<string, Float32Array>> = {};
  for (const [name, t] of optimizer.tensors) {
    const dot = name.lastIndexOf(".");
    if (dot <= 0 || t.dtype !== "F32") throw fail(`optimizer.safetensors has an unexpected tensor "${name}"`);
    const bad = describeNonFinite(t);
    if (bad) {
      throw new Error(
        `${source}: optimizer.safetensors "${name}" ${bad}: a diverged step was saved; resume from an earlier checkpoint`,
      );
    }
    const param = name.slice(0, dot);
    buffers[param] ??= {};
    buffers[param]![name.slice(dot + 1)] = tensorToFloat32(t).slice();
  }
  return {
    step: stateJson.step as number,
    tokens: stateJson.tokens as number,
    elapsedS: typeof stateJson.elapsed_s === "number" ? stateJson.elapsed_s : 0,
    data: { epoch: data.epoch, cursor: data.cursor },
    rng: (stateJson.rng as CheckpointState["rng"]) ?? null,
    optimizer: { kind, step, buffers },
    run: (stateJson.run as Record<string, unknown>) ?? {},
  };
}
