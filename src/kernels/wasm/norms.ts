/** Layer norm, RMS norm and softmax through wasm; softmax splits its rows between threads. */
import type { Heap } from "./heap.js";
import { rowParts, type WasmOp } from "./runtime.js";

// an optional [n] buffer: copied in, or the null pointer 0
const nul = (h: Heap, x: Float32Array | null, n: number) => (x ? h.put(x, n) : 0);

// x: [N, C] -> out: [N, C]; mean, rstd: [N]
export const layerNormForward: WasmOp<"layerNormForward"> = (
  rt,
  out,
  mean,
  rstd,
  x,
  weight,
  bias,
  N,
  C,
  eps,
) => {
  const { heap: h, threads } = rt;
  h.reset();
  const px = h.put(x, N * C);
  const pw = h.put(weight, C);
  const pbias = h.put(bias, C);
  const pm = h.alloc(N * 4);
  const ps = h.alloc(N * 4);
  threads.run(
    h,
    "layerNormForward",
    rowParts(threads, N, C * 3).map(([n0, n1]) => {
      const o = 4 * n0 * C;
      return [px + o, pm + 4 * n0, ps + 4 * n0, px + o, pw, pbias, n1 - n0, C, eps];
    }),
  );
  h.get(out, px, N * C);
  h.get(mean, pm, N);
  h.get(rstd, ps, N);
};

// dx: [N, C] overwritten; dweight, dbias: [C] accumulate (null: skipped)
export const layerNormBackward: WasmOp<"layerNormBackward"> = (
  rt,
  dx,
  dweight,
  dbias,
  dout,
  x,
  weight,
  mean,
  rstd,
  N,
  C,
) => {
  const { heap: h, threads } = rt;
  h.reset();
  const pdw = nul(h, dweight, C);
  const pdb = nul(h, dbias, C);
  const pg = h.put(dout, N * C);
  const px = h.put(x, N * C);
  const pw = h.put(weight, C);
  const pm = h.put(mean, N);
  const ps = h.put(rstd, N);
  const pdx = dx ? h.alloc(N * C * 4) : 0;
  // rows split only when no weight gradient sums over them
  const parts = dweight || dbias ? [[0, N] as const] : rowParts(threads, N, C * 4);
  threads.run(
    h,
    "layerNormBackward",
    parts.map(([n0, n1]) => {
      const o = 4 * n0 * C;
      return [pdx && pdx + o, pdw, pdb, pg + o, px + o, pw, pm + 4 * n0, ps + 4 * n0, n1 - n0, C];
    }),
  );
  if (dx) h.get(dx, pdx, N * C);
  if (dweight) h.get(dweight, pdw, C);
  if (dbias) h.get(dbias, pdb, C);
};

// x: [N, C] -> out: [N, C] = x * rstd * weight; rstd: [N]
export const rmsNormForward: WasmOp<"rmsNormForward"> = (rt, out, rstd, x, weight, N, C, eps) => {
  const { heap: h, threads } = rt;
  h.reset();
  const px = h.put(x, N * C);
  const pw = h.put(weight, C);
  const ps = h.alloc(N * 4);
  threads.run(
    h,
    "rmsNormForward",
    rowParts(threads, N, C * 2).map(([n0, n1]) => {
      const o = 4 * n0 * C;
      return [px + o, ps + 4 * n0, px + o, pw, n1 - n0, C, eps];
    }),
  );
  h.get(out, px, N * C);
  h.get(rstd, ps, N);
};

// dx: [N, C] overwritten; dweight: [C] accumulates (null: skipped)
export const rmsNormBackward: WasmOp<"rmsNormBackward"> = (rt, dx, dweight, dout, x, weight, rstd, N, C) => {
  const { heap: h, threads } = rt;
  h.reset();
  const pdw = nul(h, dweight, C);
  const pg = h.put(dout, N * C);
  const px = h.put(x, N * C);
  const pw = h.put(weight, C);
  const ps = h.put(rstd, N);
  const pdx = dx ? h.alloc(N * C * 4) : 0;
  // rows split only when no weight gradient sums over them
  const parts = dweight ? [[0, N] as const] : rowParts(threads, N, C * 3);
  threads.run(
    h,
    "rmsNormBackward",
    parts.map(([n0, n1]) => {
      const o = 4 * n0 * C;
      return [pdx && pdx + o, pdw, pg + o, px + o, pw, ps + 4 * n0, n1 - n0, C];
    }),
  );
  if (dx) h.get(dx, pdx, N * C);
  if (dweight) h.get(dweight, pdw, C);
};

// x: [N, C] -> out: [N, C], softmax over C
export const softmaxForward: WasmOp<"softmaxForward"> = (rt, out, x, N, C) => {
  const { heap: h, threads } = rt;
  h.reset();
  const px = h.put(x, N * C);
  threads.run(
    h,
    "softmaxForward",
    rowParts(threads, N, C * 8).map(([n0, n1]) => [px, px, C, n0, n1]),
  );
  h.get(out, px, N * C);
};

// dx: [N, C] = y * (dout - sum(dout * y)), y the forward output
export const softmaxBackward: WasmOp<"softmaxBackward"> = (rt, dx, dout, y, N, C) => {
  const { heap: h, threads } = rt;
  h.reset();
  const pg = h.put(dout, N * C);
  const py = h.put(y, N * C);
  threads.run(
    h,
    "softmaxBackward",
    rowParts(threads, N, C * 2).map(([n0, n1]) => [pg, pg, py, C, n0, n1]),
  );
  h.get(dx, pg, N * C);
};
