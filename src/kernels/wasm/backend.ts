/**
 * The WebAssembly SIMD128 backend: every Backend method as a wasm kernel (assembly/*.ts), except the
 * pure memory moves (slice, sliceBackward, embeddingForward/Backward), which stay TypedArray copies and
 * loops: routing them through wasm would copy more than they touch.
 *
 * Each call copies its operands into the arena, runs the kernel (split between threads where the work
 * is large enough) and copies its outputs back, so aliasing (out === a) is safe.
 */
import type { AdamWParams, AttentionDims, Backend, MatmulDims } from "../backend.js";
import { embeddingBackward, embeddingForward, slice, sliceBackward } from "../ref/elementwise.js";
import type { Heap } from "./heap.js";
import { wasmMatmul } from "./matmul.js";
import { ranges, type Threads } from "./threads.js";

/** Below this many inner-loop steps per thread, row-split kernels stay on one thread. */
const MIN_WORK_PER_THREAD = 1 << 18;

export interface WasmRuntime {
  heap: Heap;
  threads: Threads;
}

/** Drops size-1 dims and merges adjacent dims that both stride arrays walk contiguously. */
function collapse(shape: readonly number[], s1: readonly number[], s2: readonly number[]) {
  const sh: number[] = [];
  const a: number[] = [];
  const b: number[] = [];
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const n = sh.length - 1;
    if (n >= 0 && a[n] === s1[d]! * shape[d]! && b[n] === s2[d]! * shape[d]!) {
      sh[n]! *= shape[d]!;
      a[n] = s1[d]!;
      b[n] = s2[d]!;
    } else {
      sh.push(shape[d]!);
      a.push(s1[d]!);
      b.push(s2[d]!);
    }
  }
  if (sh.length === 0) return { shape: [1], s1: [0], s2: [0] };
  return { shape: sh, s1: a, s2: b };
}

/** Elements a strided walk over `shape` reaches: the highest offset + 1. */
const extent = (shape: number[], strides: number[]) =>
  shape.reduce((acc, s, d) => acc + (s - 1) * strides[d]!, 0) + 1;

/** Ranges of rows for the row-split kernels: one part unless each thread gets enough work. */
function rowParts(threads: Threads, rows: number, workPerRow: number): [number, number][] {
  const t = Math.min(threads.count, Math.floor((rows * workPerRow) / MIN_WORK_PER_THREAD));
  return ranges(rows, Math.max(1, t));
}

export function createWasmBackend(name: string, runtime: () => WasmRuntime): Backend {
  const rt = runtime;
  // an optional [n] buffer: copied in, or the null pointer 0
  const nul = (h: Heap, x: Float32Array | null, n: number) => (x ? h.put(x, n) : 0);
  return {
    name,

    matmul(out: Float32Array, a: Float32Array, b: Float32Array, d: MatmulDims): void {
      const { heap, threads } = rt();
      wasmMatmul(heap, threads, out, a, b, d);
    },

    binary(op, out, a, b, outShape, aStrides, bStrides) {
      const total = outShape.reduce((x, y) => x * y, 1);
      if (total === 0) return;
      const c = collapse(outShape, aStrides, bStrides);
      const { heap: h } = rt();
      h.reset();
      const pa = h.put(a, extent(c.shape, c.s1));
      const pb = h.put(b, extent(c.shape, c.s2));
      const po = h.alloc(total * 4);
      const nd = c.shape.length - 1;
      const meta = h.alloc(16 * (nd + 1));
      const m = h.i32(meta, 4 * (nd + 1));
      for (let d = 0; d < nd; d++) {
        m[d] = c.shape[d]!;
        m[nd + 1 + d] = c.s1[d]!;
        m[2 * (nd + 1) + d] = c.s2[d]!;
      }
      const n = c.shape[nd]!;
      h.k.binary!(
        +(op === "mul"),
        po,
        pa,
        pb,
        nd,
        meta,
        meta + 4 * (nd + 1),
        meta + 8 * (nd + 1),
        meta + 12 * (nd + 1),
        n,
        c.s1[nd]!,
        c.s2[nd]!,
      );
      h.get(out, po, total);
    },

    sumTo(out, g, gShape, outStrides) {
      const total = gShape.reduce((x, y) => x * y, 1);
      if (total === 0) {
        out.fill(0);
        return;
      }
      const contiguous: number[] = [];
      for (let d = gShape.length - 1, s = 1; d >= 0; d--) {
        contiguous[d] = s;
        s *= gShape[d]!;
      }
      const c = collapse(gShape, outStrides, contiguous);
      const { heap: h } = rt();
      h.reset();
      const pg = h.put(g, total);
      const po = h.alloc(out.length * 4);
      const nd = c.shape.length - 1;
      const meta = h.alloc(12 * (nd + 1));
      const m = h.i32(meta, 3 * (nd + 1));
      for (let d = 0; d < nd; d++) {
        m[d] = c.shape[d]!;
        m[nd + 1 + d] = c.s1[d]!;
      }
      h.k.sumTo!(
        po,
        out.length,
        pg,
        nd,
        meta,
        meta + 4 * (nd + 1),
        meta + 8 * (nd + 1),
        c.shape[nd]!,
        c.s1[nd]!,
      );
      h.get(out, po);
    },

    scale(out, x, s) {
      const { heap: h } = rt();
      h.reset();
      const px = h.put(x);
      h.k.scale!(px, px, x.length, s);
      h.get(out, px, x.length);
    },

    slice,
    sliceBackward,
    embeddingForward,
    embeddingBackward,

    layerNormForward(out, mean, rstd, x, weight, bias, N, C, eps) {
      const { heap: h } = rt();
      h.reset();
      const px = h.put(x, N * C);
      const pw = h.put(weight, C);
      const pbias = h.put(bias, C);
      const pm = h.alloc(N * 4);
      const ps = h.alloc(N * 4);
      h.k.layerNormForward!(px, pm, ps, px, pw, pbias, N, C, eps);
      h.get(out, px, N * C);
      h.get(mean, pm, N);
      h.get(rstd, ps, N);
    },

    layerNormBackward(dx, dweight, dbias, dout, x, weight, mean, rstd, N, C) {
      const { heap: h } = rt();
      h.reset();
      const pdw = nul(h, dweight, C);
      const pdb = nul(h, dbias, C);
      const pg = h.put(dout, N * C);
      const px = h.put(x, N * C);
      const pw = h.put(weight, C);
      const pm = h.put(mean, N);
      const ps = h.put(rstd, N);
      const pdx = dx ? h.alloc(N * C * 4) : 0;
      h.k.layerNormBackward!(pdx, pdw, pdb, pg, px, pw, pm, ps, N, C);
      if (dx) h.get(dx, pdx, N * C);
      if (dweight) h.get(dweight, pdw, C);
      if (dbias) h.get(dbias, pdb, C);
    },

    rmsNormForward(out, rstd, x, weight, N, C, eps) {
      const { heap: h } = rt();
      h.reset();
      const px = h.put(x, N * C);
      const pw = h.put(weight, C);
      const ps = h.alloc(N * 4);
      h.k.rmsNormForward!(px, ps, px, pw, N, C, eps);
      h.get(out, px, N * C);
      h.get(rstd, ps, N);
    },

    rmsNormBackward(dx, dweight, dout, x, weight, rstd, N, C) {
      const { heap: h } = rt();
      h.reset();
      const pdw = nul(h, dweight, C);
      const pg = h.put(dout, N * C);
      const px = h.put(x, N * C);
      const pw = h.put(weight, C);
      const ps = h.put(rstd, N);
      const pdx = dx ? h.alloc(N * C * 4) : 0;
      h.k.rmsNormBackward!(pdx, pdw, pg, px, pw, ps, N, C);
      if (dx) h.get(dx, pdx, N * C);
      if (dweight) h.get(dweight, pdw, C);
    },

    geluForward(out, x) {
      unary(rt().heap, "geluForward", out, x);
    },
    geluBackward(dx, dout, x) {
      pointwiseGrad(rt().heap, "geluBackward", dx, dout, x);
    },
    siluForward(out, x) {
      unary(rt().heap, "siluForward", out, x);
    },
    siluBackward(dx, dout, x) {
      pointwiseGrad(rt().heap, "siluBackward", dx, dout, x);
    },

    softmaxForward(out, x, N, C) {
      const { heap: h, threads } = rt();
      h.reset();
      const px = h.put(x, N * C);
      threads.run(
        h,
        "softmaxForward",
        rowParts(threads, N, C * 8).map(([n0, n1]) => [px, px, C, n0, n1]),
      );
      h.get(out, px, N * C);
    },

    softmaxBackward(dx, dout, y, N, C) {
      const { heap: h, threads } = rt();
      h.reset();
      const pg = h.put(dout, N * C);
      const py = h.put(y, N * C);
      threads.run(
        h,
        "softmaxBackward",
        rowParts(threads, N, C * 2).map(([n0, n1]) => [pg, pg, py, C, n0, n1]),
      );
      h.get(dx, pg, N * C);
    },

    rope(out, x, B, T, H, D, offset, theta, inverse) {
      const half = D >> 1;
      const sign = inverse ? -1 : 1;
      const { heap: h } = rt();
      h.reset();
      const px = h.put(x, B * T * H * D);
      const pcs = h.alloc(T * half * 8);
      const cs = h.f32(pcs, T * half * 2);
      for (let t = 0; t < T; t++) {
        for (let i = 0; i < half; i++) {
          const angle = (offset + t) * theta ** ((-2 * i) / D);
          cs[2 * (t * half + i)] = Math.cos(angle);
          cs[2 * (t * half + i) + 1] = sign * Math.sin(angle);
        }
      }
      h.k.rope!(px, px, pcs, B, T, H, D);
      h.get(out, px, B * T * H * D);
    },

    attentionForward(out, att, q, k, v, d: AttentionDims) {
      const { B, Tq, Tk, Hq, Hkv, D, causal } = d;
      const { heap: h, threads } = rt();
      h.reset();
      const pq = h.put(q, B * Tq * Hq * D);
      const pk = h.put(k, B * Tk * Hkv * D);
      const pv = h.put(v, B * Tk * Hkv * D);
      const po = h.alloc(B * Tq * Hq * D * 4);
      const pat = h.alloc(B * Hq * Tq * Tk * 4);
      const parts = rowParts(threads, B * Hq, Tq * Tk * D * 2);
      threads.run(
        h,
        "attentionForward",
        parts.map(([r0, r1]) => [po, pat, pq, pk, pv, Tq, Tk, Hq, Hkv, D, +causal, r0, r1]),
      );
      h.get(out, po, B * Tq * Hq * D);
      h.get(att, pat, B * Hq * Tq * Tk);
    },

    attentionBackward(dq, dk, dv, dout, q, k, v, att, d: AttentionDims) {
      const { B, Tq, Tk, Hq, Hkv, D, causal } = d;
      const { heap: h, threads } = rt();
      h.reset();
      const nq = B * Tq * Hq * D;
      const nk = B * Tk * Hkv * D;
      const pg = h.put(dout, nq);
      const pq = h.put(q, nq);
      const pk = h.put(k, nk);
      const pv = h.put(v, nk);
      const pat = h.put(att, B * Hq * Tq * Tk);
      const pdq = dq ? h.alloc(nq * 4) : 0;
      const pdk = dk ? h.alloc(nk * 4) : 0;
      const pdv = dv ? h.alloc(nk * 4) : 0;
      const parts = rowParts(threads, B * Hkv, (Hq / Hkv) * Tq * Tk * D * 4);
      const scratch = h.alloc(Tk * 4 * parts.length);
      threads.run(
        h,
        "attentionBackward",
        parts.map(([r0, r1], t) => [
          pdq,
          pdk,
          pdv,
          pg,
          pq,
          pk,
          pv,
          pat,
          Tq,
          Tk,
          Hq,
          Hkv,
          D,
          +causal,
          scratch + t * Tk * 4,
          r0,
          r1,
        ]),
      );
      if (dq) h.get(dq, pdq, nq);
      if (dk) h.get(dk, pdk, nk);
      if (dv) h.get(dv, pdv, nk);
    },

    crossEntropyForward(losses, lse, logits, targets, N, V) {
      const { heap: h, threads } = rt();
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
    },

    crossEntropyBackward(dlogits, logits, lse, targets, N, V, scale) {
      const { heap: h, threads } = rt();
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
    },

    adamw(param: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, p: AdamWParams) {
      const { lr, beta1, beta2, eps, weightDecay, step } = p;
      const n = param.length;
      const { heap: h } = rt();
      h.reset();
      const pp = h.put(param, n);
      const pg = h.put(grad, n);
      const pm = h.put(m, n);
      const pv = h.put(v, n);
      h.k.adamw!(pp, pg, pm, pv, n, lr, beta1, beta2, eps, weightDecay, 1 - beta1 ** step, 1 - beta2 ** step);
      h.get(param, pp, n);
      h.get(m, pm, n);
      h.get(v, pv, n);
    },
  };
}

// out: [n] = f(x: [n])
function unary(h: Heap, kernel: string, out: Float32Array, x: Float32Array): void {
  h.reset();
  const px = h.put(x);
  h.k[kernel]!(px, px, x.length);
  h.get(out, px, x.length);
}

// dx: [n] = dout * f'(x)
function pointwiseGrad(h: Heap, kernel: string, dx: Float32Array, dout: Float32Array, x: Float32Array): void {
  h.reset();
  const pg = h.put(dout, x.length);
  const px = h.put(x);
  h.k[kernel]!(pg, pg, px, x.length);
  h.get(dx, pg, x.length);
}
