/**
 * Node's kernel entry (src/node.ts and the CLI import it): registers the worker-thread wasm backend and,
 * when its addon is built, the native one, which backend() then prefers. One thread count for both:
 * LORA_THREADS, setThreads(n), default the number of cores.
 */
import { registerBackend } from "../index.js";
import { nativeAddon } from "../native/node/addon.js";
import { bf16Speedup, createNativeBackend } from "../native/node/backend.js";
import {
  defaultThreads,
  setThreads as setWasmThreads,
  getThreads as wasmThreads,
} from "../wasm/node/pool.js";

export { nativeStatus } from "../native/node/addon.js";

const addon = nativeAddon();
// LORA_ISA names a level this CPU lacks: refuse, rather than run something other than what was asked
const refused = addon?.info().error;
if (refused) throw new Error(refused);
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

/** The ISA level the native kernels run at ("avx512bf16", "avx512", "avx2", "generic"; "neon" on arm64), or null when the
 *  addon is absent. LORA_ISA forces a level the CPU supports. */
export function nativeIsa(): string | null {
  return addon ? addon.info().isa : null;
}

/** The level in use, the CPU's best, and whether LORA_ISA forced it (null without the addon). */
export function nativeIsaInfo(): { isa: string; cpu: string; forced: boolean; supported: string[] } | null {
  if (!addon) return null;
  const { isa, cpu, forced, supported } = addon.info();
  return { isa, cpu, forced, supported };
}

/** A native bf16 product's speed against f32 here, timed once (bf16Speedup, about 25 ms: `lora doctor`
 *  shows it); null without the addon or where the level has no bf16 products. */
export function nativeBf16Speedup(): number | null {
  return addon?.info().bf16 ? bf16Speedup(addon) : null;
}
