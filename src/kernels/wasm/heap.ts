/**
 * The wasm side of the backend: one linear memory, one instance of the kernel module, and a bump
 * arena for the operands of the current call. Tensors live on the JS heap as Float32Arrays, so each
 * call copies its inputs in (the arena is reset at the start of the call) and its outputs back out.
 * The memory grows on demand and never shrinks: it stays at the largest call's size, which the ops
 * bound by running large calls in chunks (runtime.ts maxChunkFloats).
 */

/** Byte offset where the arena starts; below it sit the module's static data (from 4096) and the
 *  thread pool's control block (CONTROL_OFFSET). 0 stays free, so a 0 pointer means "null". */
export const CONTROL_OFFSET = 65536;
export const ARENA_BASE = 1 << 20;
const PAGE = 65536;

/** The kernel module's exports, as called from JS: pointers are byte offsets, flags are 0/1. */
export type Kernels = Record<string, (...args: number[]) => number>;

export class Heap {
  readonly memory: WebAssembly.Memory;
  readonly k: Kernels;
  private top = ARENA_BASE;

  constructor(memory: WebAssembly.Memory, module: WebAssembly.Module) {
    this.memory = memory;
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    this.k = instance.exports as unknown as Kernels;
    this.ensure(ARENA_BASE);
  }

  /** Starts a call: frees everything the previous call allocated. */
  reset(): void {
    this.top = ARENA_BASE;
  }

  private ensure(end: number): void {
    const have = this.memory.buffer.byteLength;
    if (end > have) this.memory.grow(Math.ceil((end - have) / PAGE));
  }

  /** Reserves `bytes` (64-byte aligned) and returns the offset. */
  alloc(bytes: number): number {
    const at = this.top;
    this.top = at + Math.ceil(bytes / 64) * 64;
    this.ensure(this.top);
    return at;
  }

  /** A view of n floats at byte offset `at` (make views after the last alloc: growing replaces the buffer). */
  f32(at: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, at, n);
  }

  i32(at: number, n: number): Int32Array {
    return new Int32Array(this.memory.buffer, at, n);
  }

  /** Copies the first n values of x into a fresh block; returns its offset. */
  put(x: Float32Array | Int32Array, n = x.length): number {
    const at = this.alloc(n * 4);
    const view = x instanceof Int32Array ? this.i32(at, n) : this.f32(at, n);
    view.set(n === x.length ? x : x.subarray(0, n));
    return at;
  }

  /** Copies n floats at `at` into out. */
  get(out: Float32Array, at: number, n = out.length): void {
    out.set(this.f32(at, n));
  }
}
