/**
 * Zeroed f32 buffers for op outputs. A Float32Array of more than 16 floats gets its own off-heap
 * ArrayBuffer, and allocating one costs 0.6-1 us on Node 20 (measured at 64 to 1024 floats, a Xeon),
 * longer than the kernel that fills it at decode sizes: a decode step of stories260K makes about a
 * hundred, a sixth of the step. One of 16 floats or fewer lives on V8's heap instead, and the native
 * backend's N-API moves it off the heap the first time a kernel gets it, at about the same cost. Small
 * buffers are therefore views into shared 64 KiB slabs, handed out
 * once each (never reused, so they are zero) at 0.06-0.1 us. A slab lives while any of its views does:
 * at most 64 KiB held by one small long-lived view. Never pass such a view's `.buffer` on (a
 * transfer or a `new Uint8Array(x.buffer)` would take the whole slab); take `x.slice()` for that.
 *
 * Inside `scratch(fn)` every buffer comes from one arena instead, reused by the next scope: for a step
 * whose outputs all die with it (a serve decode step, which samples its logits inside).
 */
const SLAB_BYTES = 1 << 16;
/** Buffers up to this many floats come from a slab; larger ones are allocated on their own. */
const SLAB_MAX = 1024;

let slab = new ArrayBuffer(SLAB_BYTES);
let used = 0;

/** The scratch scope's arena while one runs (else null), the bytes handed out of it, and asked for. */
let arena: ArrayBuffer | null = null;
let arenaUsed = 0;
let asked = 0;
/** The arena kept between scopes, sized to what the last scope asked for, up to ARENA_MAX. */
let kept = new ArrayBuffer(0);
/** A scope that asks for more than this (a long prompt's logits) takes the rest from the allocator. */
const ARENA_MAX = 64 << 20;
/** Offsets in the arena are multiples of this: every buffer starts on a cache line, as malloc's do. */
const ALIGN = 64;
let checks = false;

/** A zeroed Float32Array of n floats. */
export function floats(n: number): Float32Array {
  if (arena && n > 0) {
    const bytes = Math.ceil((n * 4) / ALIGN) * ALIGN;
    asked += bytes;
    if (arenaUsed + bytes <= arena.byteLength) {
      const out = new Float32Array(arena, arenaUsed, n);
      arenaUsed += bytes;
      return out.fill(0); // the last scope's values
    }
  }
  if (n === 0 || n > SLAB_MAX) return new Float32Array(n);
  const bytes = n * 4;
  if (used + bytes > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES);
    used = 0;
  }
  const out = new Float32Array(slab, used, n);
  used += bytes;
  return out;
}

/**
 * Runs fn with every op output it makes taken from a scratch arena, which the next scope reuses: no
 * allocation per op, and nothing for the collector. What fn returns, and anything it keeps, must
 * therefore not be an op output: only numbers, or copies (a KV cache copies its rows in). A serve
 * decode step of stories260K at 16 rows made about 200 buffers, 0.35 MiB, and took 0.74 ms against
 * 0.65 ms in a scope (2-core Xeon, Sapphire Rapids class). A scope inside a scope is the outer one.
 */
export function scratch<T>(fn: () => T): T {
  if (arena) return fn();
  if (checks) kept = new ArrayBuffer(kept.byteLength);
  else if (asked > kept.byteLength) kept = new ArrayBuffer(Math.min(ARENA_MAX, asked));
  arena = kept;
  arenaUsed = 0;
  asked = 0;
  try {
    return fn();
  } finally {
    if (checks) {
      new Float32Array(arena, 0, arenaUsed / 4).fill(Number.NaN);
      if (asked > kept.byteLength) kept = new ArrayBuffer(Math.min(ARENA_MAX, asked));
    }
    arena = null;
  }
}

/**
 * Tests: each scope gets a new arena, filled with NaN when it ends, so an op output that outlives its
 * scope reads NaN from then on instead of the next step's values.
 */
export function setScratchChecks(on: boolean): void {
  checks = on;
}
