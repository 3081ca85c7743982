/** RoPE (from a precomputed cos/sin table) and causal grouped-query attention, forward and backward. */
import { axpy, dot, zero } from "./simd";
import { expShift, rowMax } from "./norms";

// x: [B, T, H, D] -> out; pairs (i, i + D/2) rotate by cs: [T, D/2, 2] = (cos, sin)
export function rope(out: usize, x: usize, cs: usize, B: i32, T: i32, H: i32, D: i32): void {
  const half = D >> 1;
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
      }
    }
  }
}

// q: [B, Tq, Hq, D], k, v: [B, Tk, Hkv, D] -> out: [B, Tq, Hq, D], att: [B, Hq, Tq, Tk];
// this call does the (b, h) pairs bh in [bh0, bh1)
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
  bh0: i32,
  bh1: i32,
): void {
  const group = Hq / Hkv;
  const scale: f32 = <f32>(1 / Math.sqrt(<f64>D));
  for (let bh = bh0; bh < bh1; bh++) {
    const b = bh / Hq;
    const h = bh % Hq;
    const hk = h / group;
    for (let i = 0; i < Tq; i++) {
      const qo = q + ((<usize>((b * Tq + i) * Hq + h) * D) << 2);
      const oo = out + ((<usize>((b * Tq + i) * Hq + h) * D) << 2);
      const ar = att + ((<usize>(bh * Tq + i) * Tk) << 2);
      const limit = causal ? Tk - Tq + i + 1 : Tk;
      for (let j = 0; j < limit; j++) {
        const ko = k + ((<usize>((b * Tk + j) * Hkv + hk) * D) << 2);
        store<f32>(ar + (<usize>j << 2), dot(qo, ko, D) * scale);
      }
      if (limit < Tk) zero(ar + (<usize>max(limit, 0) << 2), Tk - max(limit, 0));
      zero(oo, D);
      if (limit <= 0) continue;
      const sum = expShift(ar, ar, limit, rowMax(ar, limit));
      const inv: f32 = 1 / sum;
      for (let j = 0; j < limit; j++) {
        const p = load<f32>(ar + (<usize>j << 2)) * inv;
        store<f32>(ar + (<usize>j << 2), p);
        axpy(oo, p, v + ((<usize>((b * Tk + j) * Hkv + hk) * D) << 2), D);
      }
    }
  }
}

// dq, dk, dv overwritten (0 = skip); this call does the (b, kv head) pairs bk in [bk0, bk1), each with
// its whole query-head group, so dk and dv sum in the same order however the pairs are split
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
  dscore: usize,
  bk0: i32,
  bk1: i32,
): void {
  const group = Hq / Hkv;
  const scale: f32 = <f32>(1 / Math.sqrt(<f64>D));
  for (let bk = bk0; bk < bk1; bk++) {
    const b = bk / Hkv;
    const hk = bk % Hkv;
    for (let j = 0; j < Tk; j++) {
      const o = (<usize>((b * Tk + j) * Hkv + hk) * D) << 2;
      if (dk) zero(dk + o, D);
      if (dv) zero(dv + o, D);
    }
    for (let h = hk * group; h < (hk + 1) * group; h++) {
      for (let i = 0; i < Tq; i++) {
        const qo = (<usize>((b * Tq + i) * Hq + h) * D) << 2;
        const ar = att + ((<usize>((b * Hq + h) * Tq + i) * Tk) << 2);
        const limit = causal ? Tk - Tq + i + 1 : Tk;
        if (dq) zero(dq + qo, D);
        let d: f32 = 0;
        for (let j = 0; j < limit; j++) {
          const vo = (<usize>((b * Tk + j) * Hkv + hk) * D) << 2;
          const p = load<f32>(ar + (<usize>j << 2));
          const dp = dot(dout + qo, v + vo, D);
          if (dv) axpy(dv + vo, p, dout + qo, D);
          store<f32>(dscore + (<usize>j << 2), dp);
          d += dp * p;
        }
        for (let j = 0; j < limit; j++) {
          const ds = load<f32>(ar + (<usize>j << 2)) * (load<f32>(dscore + (<usize>j << 2)) - d) * scale;
          const ko = (<usize>((b * Tk + j) * Hkv + hk) * D) << 2;
          if (dq) axpy(dq + qo, ds, k + ko, D);
          if (dk) axpy(dk + ko, ds, q + qo, D);
        }
      }
    }
  }
}
