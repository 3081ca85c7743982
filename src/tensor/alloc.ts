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
 */
const SLAB_BYTES = 1 << 16;
/** Buffers up to this many floats come from a slab; larger ones are allocated on their own. */
const SLAB_MAX = 1024;

let slab = new ArrayBuffer(SLAB_BYTES);
let used = 0;

/** A zeroed Float32Array of n floats. */
export function floats(n: number): Float32Array {
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
