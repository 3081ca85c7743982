/** AdamW through wasm: bias corrections computed in f64 here, the update in f32 SIMD. */
import { elementParts, type WasmOp } from "./runtime.js";

// param, grad, m, v: [n]; one step in place
export const adamw: WasmOp<"adamw"> = (rt, param, grad, m, v, p) => {
  const { lr, beta1, beta2, eps, weightDecay, step } = p;
  const n = param.length;
  const { heap: h, threads } = rt;
  h.reset();
  const pp = h.put(param, n);
  const pg = h.put(grad, n);
  const pm = h.put(m, n);
  const pv = h.put(v, n);
  const [bc1, bc2] = [1 - beta1 ** step, 1 - beta2 ** step];
  threads.run(
    h,
    "adamw",
    elementParts(threads, n, 8).map(([i0, i1]) => {
      const o = 4 * i0;
      return [pp + o, pg + o, pm + o, pv + o, i1 - i0, lr, beta1, beta2, eps, weightDecay, bc1, bc2];
    }),
  );
  h.get(param, pp, n);
  h.get(m, pm, n);
  h.get(v, pv, n);
};
