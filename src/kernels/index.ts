/** Backend selection. The default is the fastest available; LORA_BACKEND=<name> picks one explicitly. */
import type { Backend } from "./backend.js";
import { refBackend } from "./ref/index.js";

export type { AdamWParams, AttentionDims, Backend, MatmulDims } from "./backend.js";

const registry = new Map<string, Backend>([["ref", refBackend]]);
let active: Backend | null = null;

/** Makes a backend selectable by name (faster backends register themselves when they load). */
export function registerBackend(backend: Backend): void {
  registry.set(backend.name, backend);
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

/** The active backend: LORA_BACKEND if set (and known), else the reference one. */
export function backend(): Backend {
  if (active) return active;
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  return setBackend(env?.LORA_BACKEND ?? "ref");
}
