/**
 * Node's kernel entry (src/node.ts and the CLI import it): registers the worker-thread wasm backend and,
 * when its addon is built, the native one, which backend() then prefers. One thread count for both:
 * LORA_THREADS, setThreads(n), default the number of cores.
 */
import { registerBackend } from "../index.js";
import { nativeAddon } from "../native/node/addon.js";
import { createNativeBackend } from "../native/node/backend.js";
import {
  defaultThreads,
  setThreads as setWasmThreads,
  getThreads as wasmThreads,
} from "../wasm/node/pool.js";

export { nativeStatus } from "../native/node/addon.js";

const addon = nativeAddon();
if (addon) {
  addon.setThreads(defaultThreads());
  registerBackend(createNativeBackend(addon));
}

/** Sets how many threads (the calling thread included) every backend splits work into. */
export function setThreads(n: number): void {
  setWasmThreads(n);
  addon?.setThreads(Math.max(1, Math.floor(n)));
}

export function getThreads(): number {
  return wasmThreads();
}

/** What the native addon runs on this CPU ("avx512+bf16", "avx2", "generic"), or null when it is absent. */
export function nativeIsa(): string | null {
  return addon ? addon.info().isa : null;
}
