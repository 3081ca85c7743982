/** Cross-entropy over a vocabulary through wasm; rows split between threads. */
import { rowParts, type WasmOp } from "./runtime.js";

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
  h.reset();
  const pl = h.put(logits, N * V);
  const pt = h.put(targets, N);
  const ploss = h.alloc(N * 4);
  const plse = h.alloc(N * 4);
  threads.run(
    h,
    "crossEntropyForward",
    rowParts(threads, N, V * 4).map(([n0, n1]) => [ploss, plse, pl, pt, V, n0, n1]),
  );
  h.get(losses, ploss, N);
  h.get(lse, plse, N);
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
  h.reset();
  const pl = h.put(logits, N * V);
  const plse = h.put(lse, N);
  const pt = h.put(targets, N);
  threads.run(
    h,
    "crossEntropyBackward",
    rowParts(threads, N, V * 4).map(([n0, n1]) => [pl, pl, plse, pt, V, scale, n0, n1]),
  );
  h.get(dlogits, pl, N * V);
};
