/**
 * The embedded kernel modules: feature detection and synchronous compilation from the base64 bytes in
 * bytes.ts (no fs, no fetch, so this works in a browser too). Relaxed SIMD is used where
 * WebAssembly.validate accepts the relaxed build, else the plain mul+add build.
 */
import { plain, plainShared, relaxed, relaxedShared } from "./bytes.js";

function decode(b64: string): Uint8Array<ArrayBuffer> {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

const cache = new Map<string, Uint8Array<ArrayBuffer>>();
function bytesOf(name: Variant): Uint8Array<ArrayBuffer> {
  let b = cache.get(name);
  if (!b) {
    b = decode({ plain, relaxed, plainShared, relaxedShared }[name]);
    cache.set(name, b);
  }
  return b;
}

/** True when this engine validates WebAssembly SIMD128 (the plain build). */
export function simdSupported(): boolean {
  return typeof WebAssembly === "object" && WebAssembly.validate(bytesOf("plain"));
}

/** True when this engine validates relaxed SIMD (checked on the relaxed build itself, at call time). */
export function relaxedSupported(): boolean {
  return typeof WebAssembly === "object" && WebAssembly.validate(bytesOf("relaxed"));
}

/** Pages: 64 KiB each. The memory starts small and grows on demand up to 4 GiB. */
export const INITIAL_PAGES = 32;
export const MAX_PAGES = 65536;

type Variant = "plain" | "relaxed" | "plainShared" | "relaxedShared";
const compiled = new Map<Variant, WebAssembly.Module>();

function variant(opts: { shared: boolean; relaxed?: boolean }): { name: Variant; relaxed: boolean } {
  const relaxed = opts.relaxed ?? relaxedSupported();
  const base = relaxed ? "relaxed" : "plain";
  return { name: opts.shared ? `${base}Shared` : base, relaxed };
}

/** Compiles the kernel module (or takes the one precompileKernels made); `relaxed` defaults to what
 *  the engine supports. */
export function compileKernels(opts: { shared: boolean; relaxed?: boolean }): {
  module: WebAssembly.Module;
  relaxed: boolean;
} {
  const { name, relaxed } = variant(opts);
  let module = compiled.get(name);
  if (!module) {
    module = new WebAssembly.Module(bytesOf(name));
    compiled.set(name, module);
  }
  return { module, relaxed };
}

/** Compiles the module asynchronously ahead of first use: a browser main thread must (Chrome refuses
 *  synchronous compiles over 4 KB there); `await precompileKernels()` before the first kernel call. */
export async function precompileKernels(opts: { shared: boolean; relaxed?: boolean } = { shared: false }) {
  const { name } = variant(opts);
  if (!compiled.has(name)) compiled.set(name, await WebAssembly.compile(bytesOf(name)));
}
