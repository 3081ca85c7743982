/**
 * Backend selection. The default is the fastest available: "native" (the C++ addon, Node only, when it
 * was built), else "wasm" (WebAssembly SIMD128) wherever the engine validates SIMD, else "ref".
 * LORA_BACKEND=<name> picks one explicitly (LORA_BACKEND=ref keeps the plain-TypeScript oracle). Node
 * entries import kernels/node/index.ts, which registers "native" and re-registers "wasm" as the
 * worker-thread variant.
 */
import type { Backend } from "./backend.js";
import { refBackend } from "./ref/index.js";
import { wasmAvailable, wasmBackend } from "./wasm/index.js";

export type {
  AdamWParams,
  AttentionDims,
  Backend,
  HalfArray,
  LoraRowWeights,
  MatmulDims,
  WeightArray,
} from "./backend.js";
export { isHalf, singleMatmul } from "./backend.js";
/** Browser main threads: `await precompileKernels()` before the first kernel call (see wasm/index.ts). */
export { precompileKernels } from "./wasm/index.js";

const registry = new Map<string, Backend>([["ref", refBackend]]);
if (wasmAvailable()) registry.set(wasmBackend.name, wasmBackend);
let active: Backend | null = null;

/** Makes a backend selectable by name (faster backends register themselves when they load). Registering
 *  under the active backend's name replaces the active one too. */
export function registerBackend(backend: Backend): void {
  registry.set(backend.name, backend);
  if (active?.name === backend.name) active = backend;
}

export function availableBackends(): string[] {
  return [...registry.keys()];
}

export function setBackend(backend: Backend | string): Backend {
  if (typeof backend === "string") {
    const found = registry.get(backend);
    if (!found) {
      throw new Error(`unknown backend "${backend}"; available: ${availableBackends().join(", ")}`);
    }
    backend = found;
  }
  active = backend;
  return backend;
}

/** Fastest first: the default is the first of these that is registered. */
const PREFERENCE = ["native", "wasm", "ref"];

/** The active backend: LORA_BACKEND if set, else the fastest registered (native, wasm, then ref). */
export function backend(): Backend {
  if (active) return active;
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  return setBackend(env?.LORA_BACKEND || PREFERENCE.find((name) => registry.has(name))!);
}
