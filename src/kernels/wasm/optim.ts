/** AdamW through wasm: bias corrections computed in f64 here, the update in f32 SIMD. */
import type { WasmOp } from "./runtime.js";

// param, grad, m, v: [n]; one step in place
export const adamw: WasmOp<"adamw"> = (rt, param, grad, m, v, p) => {
  const { lr, beta1, beta2, eps, weightDecay, step } = p;
  const n = param.length;
  const { heap: h } = rt;
  h.reset();
  const pp = h.put(param, n);
  const pg = h.put(grad, n);
  const pm = h.put(m, n);
  const pv = h.put(v, n);
  h.k.adamw!(pp, pg, pm, pv, n, lr, beta1, beta2, eps, weightDecay, 1 - beta1 ** step, 1 - beta2 ** step);
  h.get(param, pp, n);
  h.get(m, pm, n);
  h.get(v, pv, n);
};
