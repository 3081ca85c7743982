/** RoPE (from a precomputed cos/sin table) and causal grouped-query attention, forward and backward. */
import { gemmBlock } from "./gemm";
import { dot, vtanh, zero } from "./simd";
import { expShift, rowMax } from "./norms";

// x: [B, T, H, D] -> out; pairs (i, i + R/2) rotate by cs: [T, R/2, 2] = (cos, sin); dims R.. pass through
export function rope(out: usize, x: usize, cs: usize, B: i32, T: i32, H: i32, D: i32, R: i32): void {
  const half = R >> 1;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const tab = cs + ((<usize>t * half) << 3);
      for (let h = 0; h < H; h++) {
        const o = ((<usize>((b * T + t) * H + h) * D) << 2);
        for (let i = 0; i < half; i++) {
          const c = load<f32>(tab + (<usize>i << 3));
          const s = load<f32>(tab + (<usize>i << 3), 4);
          const x1 = load<f32>(x + o + (<usize>i << 2));
          const x2 = load<f32>(x + o + (<usize>(i + half) << 2));
          store<f32>(out + o + (<usize>i << 2), x1 * c - x2 * s);
          store<f32>(out + o + (<usize>(i + half) << 2), x2 * c + x1 * s);
        }
        if (out != x) for (let d = R; d < D; d++) store<f32>(out + o + (<usize>d << 2), load<f32>(x + o + (<usize>d << 2)));
      }
    }
  }
}

// the first key a causal query at position `pos` sees in a sliding window (0 without one)
function windowStart(causal: bool, window: i32, pos: i32): i32 {
  return causal && window > 0 ? max(0, pos - window + 1) : 0;
}

// the soft cap's tanh of n raw scores in place: row[j] = tanh(scale * row[j] / cap) (tails through one
// padded lane group, so every entry rounds alike; the backward recomputes exactly these values)
function tanhRow(row: usize, n: i32, scale: f32, cap: f32): void {
  const vs = f32x4.splat(scale);
  const vi = f32x4.splat(1 / cap);
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    const o = <usize>j << 2;
    v128.store(row + o, vtanh(f32x4.mul(f32x4.mul(v128.load(row + o), vs), vi)));
  }
  for (; j < n; j++) {
    const o = <usize>j << 2;
    store<f32>(row + o, f32x4.extract_lane(vtanh(f32x4.mul(f32x4.mul(v128.load32_splat(row + o), vs), vi)), 0));
  }
}

// scores row: [Tk] -> probabilities: scale (and soft-cap: cap tanh(s / cap) when cap > 0), softmax over
// the first `limit` entries, zero after them
function softmaxRow(row: usize, Tk: i32, limit: i32, scale: f32, cap: f32): void {
  const n = max(0, min(limit, Tk));
  let j = 0;
  if (cap > 0) {
    tanhRow(row, n, scale, cap);
    const vc = f32x4.splat(cap);
    for (; j + 4 <= n; j += 4) v128.store(row + (<usize>j << 2), f32x4.mul(v128.load(row + (<usize>j << 2)), vc));
    for (; j < n; j++) store<f32>(row + (<usize>j << 2), load<f32>(row + (<usize>j << 2)) * cap);
  } else {
    const vs = f32x4.splat(scale);
    for (; j + 4 <= n; j += 4) v128.store(row + (<usize>j << 2), f32x4.mul(v128.load(row + (<usize>j << 2)), vs));
    for (; j < n; j++) store<f32>(row + (<usize>j << 2), load<f32>(row + (<usize>j << 2)) * scale);
  }
  if (n < Tk) zero(row + (<usize>n << 2), Tk - n);
  if (n == 0) return;
  const inv: f32 = 1 / expShift(row, row, n, rowMax(row, n));
  const vi = f32x4.splat(inv);
  j = 0;
  for (; j + 4 <= n; j += 4) v128.store(row + (<usize>j << 2), f32x4.mul(v128.load(row + (<usize>j << 2)), vi));
  for (; j < n; j++) store<f32>(row + (<usize>j << 2), load<f32>(row + (<usize>j << 2)) * inv);
}

// q: [B, Tq, Hq, D], k, v: [B, Tk, Hkv, D] -> out: [B, Tq, Hq, D], att: [B, Hq, Tq, Tk];
// this call does the (b, h) pairs bh in [bh0, bh1), each as two GEMMs on the strided head views:
// att[b, h] = softmax(cap(scale * q[b, :, h] @ k[b, :, hk]^T)), out[b, :, h] = att[b, h] @ v[b, :, hk]
// (cap(s) = cap tanh(s / cap) when cap > 0, else s)
export function attentionForward(
  out: usize,
  att: usize,
  q: usize,
  k: usize,
  v: usize,
  Tq: i32,
  Tk: i32,
  Hq: i32,
  Hkv: i32,
  D: i32,
  causal: bool,
  scale: f32,
  window: i32,
  cap: f32,
  scratch: usize,
  bh0: i32,
  bh1: i32,
): void {
  const group = Hq / Hkv;
  const ldq = Hq * D;
  const ldk = Hkv * D;
  for (let bh = bh0; bh < bh1; bh++) {
    const b = bh / Hq;
    const h = bh % Hq;
    const hk = h / group;
    const qb = q + ((<usize>(b * Tq * Hq + h) * D) << 2);
    const ob = out + ((<usize>(b * Tq * Hq + h) * D) << 2);
    const kb = k + ((<usize>(b * Tk * Hkv + hk) * D) << 2);
    const vb = v + ((<usize>(b * Tk * Hkv + hk) * D) << 2);
    const ab = att + ((<usize>bh * Tq * Tk) << 2);
    gemmBlock(ab, qb, kb, Tq, Tk, D, ldq, ldk, Tk, false, true, false, scratch, 0, Tq, 0, Tk);
    for (let i = 0; i < Tq; i++) {
      // a sliding window's row: softmax over [start, limit), zero before it
      const row = ab + ((<usize>i * Tk) << 2);
      const start = windowStart(causal, window, Tk - Tq + i);
      zero(row, start);
      softmaxRow(row + (<usize>start << 2), Tk - start, (causal ? Tk - Tq + i + 1 : Tk) - start, scale, cap);
    }
    gemmBlock(ob, ab, vb, Tq, D, Tk, Tk, ldk, ldq, false, false, false, scratch, 0, Tq, 0, D);
  }
}

// dq, dk, dv overwritten (0 = skip); this call does the (b, kv head) pairs bk in [bk0, bk1), each with
// its whole query-head group in order, so dk and dv sum in the same order however the pairs are split.
// dp: [Tq, Tk] scratch after the GEMM scratch, and with a soft cap (cap > 0) sc: [Tq, Tk] for the
// recomputed scores. Per query head h:
//   dP = dout_h @ v^T, dv += att_h^T @ dout_h, dS = att_h * (dP - rowsum(dP * att_h)) * scale,
//   with a cap dS *= 1 - tanh²(scale * q_h @ k^T / cap), dq_h = dS @ k, dk += dS^T @ q_h
export function attentionBackward(
  dq: usize,
  dk: usize,
  dv: usize,
  dout: usize,
  q: usize,
  k: usize,
  v: usize,
  att: usize,
  Tq: i32,
  Tk: i32,
  Hq: i32,
  Hkv: i32,
  D: i32,
  causal: bool,
  scale: f32,
  window: i32,
  cap: f32,
  scratch: usize,
  dp: usize,
  sc: usize,
  bk0: i32,
  bk1: i32,
): void {
  const group = Hq / Hkv;
  const ldq = Hq * D;
  const ldk = Hkv * D;
  for (let bk = bk0; bk < bk1; bk++) {
    const b = bk / Hkv;
    const hk = bk % Hkv;
    const ko = (<usize>(b * Tk * Hkv + hk) * D) << 2;
    for (let j = 0; j < Tk; j++) {
      const o = ko + ((<usize>j * ldk) << 2);
      if (dk) zero(dk + o, D);
      if (dv) zero(dv + o, D);
    }
    for (let h = hk * group; h < (hk + 1) * group; h++) {
      const qo = (<usize>(b * Tq * Hq + h) * D) << 2;
      const ab = att + ((<usize>(b * Hq + h) * Tq * Tk) << 2);
      gemmBlock(dp, dout + qo, v + ko, Tq, Tk, D, ldq, ldk, Tk, false, true, false, scratch, 0, Tq, 0, Tk);
      if (dv) gemmBlock(dv + ko, ab, dout + qo, Tk, D, Tq, Tk, ldq, ldk, true, false, true, scratch, 0, Tk, 0, D);
      // the raw scores again, as the forward pass computed them
      if (cap > 0) gemmBlock(sc, q + qo, k + ko, Tq, Tk, D, ldq, ldk, Tk, false, true, false, scratch, 0, Tq, 0, Tk);
      for (let i = 0; i < Tq; i++) {
        const start = windowStart(causal, window, Tk - Tq + i);
        const limit = max(0, min(Tk, causal ? Tk - Tq + i + 1 : Tk)) - start;
        zero(dp + ((<usize>i * Tk) << 2), start);
        const pr = ab + ((<usize>(i * Tk + start)) << 2);
        const dr = dp + ((<usize>(i * Tk + start)) << 2);
        const d = dot(dr, pr, limit);
        const vd = f32x4.splat(d);
        const vs = f32x4.splat(scale);
        let j = 0;
        for (; j + 4 <= limit; j += 4) {
          const o = <usize>j << 2;
          v128.store(dr + o, f32x4.mul(f32x4.mul(v128.load(pr + o), f32x4.sub(v128.load(dr + o), vd)), vs));
        }
        for (; j < limit; j++) {
          const o = <usize>j << 2;
          store<f32>(dr + o, load<f32>(pr + o) * (load<f32>(dr + o) - d) * scale);
        }
        if (limit < Tk - start) zero(dr + (<usize>limit << 2), Tk - start - limit);
        if (cap > 0) {
          const tr = sc + ((<usize>(i * Tk + start)) << 2);
          tanhRow(tr, limit, scale, cap);
          const one = f32x4.splat(1);
          j = 0;
          for (; j + 4 <= limit; j += 4) {
            const o = <usize>j << 2;
            const t = v128.load(tr + o);
            v128.store(dr + o, f32x4.mul(v128.load(dr + o), f32x4.sub(one, f32x4.mul(t, t))));
          }
          for (; j < limit; j++) {
            const o = <usize>j << 2;
            const t = load<f32>(tr + o);
            store<f32>(dr + o, load<f32>(dr + o) * (1 - t * t));
          }
        }
      }
      if (dq) gemmBlock(dq + qo, dp, k + ko, Tq, D, Tk, Tk, ldk, ldq, false, false, false, scratch, 0, Tq, 0, D);
      if (dk) gemmBlock(dk + ko, dp, q + qo, Tk, D, Tq, Tk, ldq, ldk, true, false, true, scratch, 0, Tk, 0, D);
    }
  }
}
