/**
 * Cross-entropy over a vocabulary through wasm; rows split between threads. Large inputs (256 rows of
 * a 50257-word vocabulary are 51 MB) run in chunks of rows, so the arena stays bounded; rows are
 * independent, so chunks change no result.
 */
import { maxChunkFloats, rowParts, type WasmOp } from "./runtime.js";

/** The row chunks [first row, row count] of an [N, V] input, each at least one row. */
function* rowChunks(N: number, V: number): Generator<[number, number]> {
  const fit = Math.max(1, Math.floor(maxChunkFloats() / Math.max(V, 1)));
  const step = Math.ceil(N / Math.ceil(N / fit));
  for (let r0 = 0; r0 < N; r0 += step) yield [r0, Math.min(N, r0 + step) - r0];
}

// logits: [N, V], targets: [N] (negative = ignored) -> losses: [N], lse: [N]
export const crossEntropyForward: WasmOp<"crossEntropyForward"> = (
  rt,
  losses,
  lse,
  logits,
  targets,
  N,
  V,
) => {
  const { heap: h, threads } = rt;
  for (const [r0, n] of rowChunks(N, V)) {
    h.reset();
    const pl = h.put(logits.subarray(r0 * V, (r0 + n) * V));
    const pt = h.put(targets.subarray(r0, r0 + n));
    const ploss = h.alloc(n * 4);
    const plse = h.alloc(n * 4);
    threads.run(
      h,
      "crossEntropyForward",
      rowParts(threads, n, V * 4).map(([n0, n1]) => [ploss, plse, pl, pt, V, n0, n1]),
    );
    losses.set(h.f32(ploss, n), r0);
    lse.set(h.f32(plse, n), r0);
  }
};

// dlogits: [N, V] = scale * (softmax(logits) - onehot(target)); ignored rows get 0
export const crossEntropyBackward: WasmOp<"crossEntropyBackward"> = (
  rt,
  dlogits,
  logits,
  lse,
  targets,
  N,
  V,
  scale,
) => {
  const { heap: h, threads } = rt;
  for (const [r0, n] of rowChunks(N, V)) {
    h.reset();
    const pl = h.put(logits.subarray(r0 * V, (r0 + n) * V));
    const plse = h.put(lse.subarray(r0, r0 + n));
    const pt = h.put(targets.subarray(r0, r0 + n));
    threads.run(
      h,
      "crossEntropyBackward",
      rowParts(threads, n, V * 4).map(([n0, n1]) => [pl, pl, plse, pt, V, scale, n0, n1]),
    );
    dlogits.set(h.f32(pl, n * V), r0 * V);
  }
};
