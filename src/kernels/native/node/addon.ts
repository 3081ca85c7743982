/**
 * Loads the native addon (native/, built by `npm install` through node-gyp where a C++ compiler is
 * present; see scripts/build-native.mjs). When it is missing or fails to load, `nativeAddon()` is null and
 * `nativeStatus()` says why, so `lora doctor` and `lora --version` can tell the user.
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/** What the addon runs (native/src/addon.cc, Info). */
export interface NativeInfo {
  /** the exports' calling convention (native/src/addon.cc NATIVE_ABI); absent before there was one */
  abi?: number;
  /** the ISA level every native kernel runs at: on x86-64 "avx512bf16", "avx512", "avx2" or "generic"; on arm64 "neon" or "generic" */
  isa: string;
  /** bf16 weights' products are native bf16 dot products (AVX512_BF16) */
  bf16: boolean;
  /** and they beat f32 on this CPU (native/src/gemm.cc gemm_bf16_faster): `--base-dtype auto` picks bf16 */
  bf16Faster: boolean;
  threads: number;
  /** the best level this CPU runs */
  cpu: string;
  /** LORA_ISA chose `isa` (below the CPU's best, or equal to it) */
  forced: boolean;
  /** why LORA_ISA was refused (a level this CPU lacks, or no level at all); "" when it was not */
  error: string;
  /** the levels this CPU runs, best first (LORA_ISA accepts each) */
  supported: string[];
  /** the largest K (a LoRA rank) the small-k panels take (native/src/gemm.h DOTS_SMALL_K) */
  smallK: number;
  /** the outputs in one small-k panel (16 at AVX-512, else 8): packLoraB's panels are that wide */
  smallKLanes: number;
  /** the most rows a rowInvariant product takes through the GEMV (native/src/gemm.h INVARIANT_ROWS) */
  invariantRows: number;
}

/** The addon's exports (native/src/addon.cc); argument order follows src/kernels/backend.ts. */
export interface NativeAddon {
  info(): NativeInfo;
  setThreads(n: number): void;
  matmul(...args: unknown[]): void;
  binary(mul: boolean, out: Float32Array, a: Float32Array, b: Float32Array, dims: Float64Array): void;
  sumTo(out: Float32Array, g: Float32Array, dims: Float64Array): void;
  [kernel: string]: (...args: never[]) => unknown;
}

const root = new URL("../../../../../", import.meta.url);
/** Where node-gyp puts the addon, and where the install script records why it is absent. */
export const ADDON_PATH = fileURLToPath(new URL("native/build/Release/lora_native.node", root));
export const STATUS_PATH = fileURLToPath(new URL("native/build-status.json", root));

/** The calling convention this JS speaks (native/src/addon.cc NATIVE_ABI): an addon of another is not used. */
export const NATIVE_ABI = 3;

let loaded: { addon: NativeAddon | null; reason: string } | undefined;

function load(): { addon: NativeAddon | null; reason: string } {
  if (process.env.LORA_NATIVE === "0") return { addon: null, reason: "disabled by LORA_NATIVE=0" };
  if (!existsSync(ADDON_PATH)) {
    let why = "it was not built";
    if (existsSync(STATUS_PATH)) {
      const s = JSON.parse(readFileSync(STATUS_PATH, "utf8")) as { ok: boolean; reason?: string };
      if (!s.ok && s.reason) why = `its build failed at install: ${s.reason}`;
    }
    return {
      addon: null,
      reason: `${why}; run \`npm run build:native\` (needs a C++ compiler and Python 3)`,
    };
  }
  try {
    const addon = createRequire(import.meta.url)(ADDON_PATH) as NativeAddon;
    const abi = addon.info().abi;
    if (abi !== NATIVE_ABI)
      return {
        addon: null,
        reason: `${ADDON_PATH} was built from other sources (calling convention ${abi ?? 1}, this code's ${NATIVE_ABI}); run \`npm run build:native\``,
      };
    return { addon, reason: "" };
  } catch (e) {
    return {
      addon: null,
      reason: `${ADDON_PATH} did not load (${(e as Error).message}); run \`npm run build:native\``,
    };
  }
}

export function nativeAddon(): NativeAddon | null {
  loaded ??= load();
  return loaded.addon;
}

/** Empty when the addon loaded; otherwise why not, and what to do. */
export function nativeStatus(): string {
  loaded ??= load();
  return loaded.reason;
}
