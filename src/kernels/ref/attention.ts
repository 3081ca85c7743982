/** Reference rotary embedding and causal grouped-query attention (with soft-capping), forward and backward. */
import { type AttentionDims, attentionScale, keyRange } from "../backend.js";

// x: [B, T, H, D] -> out: [B, T, H, D]; pairs (i, i + R/2), R = 2·freqs.length, rotate by angle
// pos * freqs[i], cos and sin times `scale`; dims R.. pass through
export function rope(
  out: Float32Array,
  x: Float32Array,
  B: number,
  T: number,
  H: number,
  D: number,
  offset: number,
  freqs: Float64Array,
  scale: number,
  inverse: boolean,
): void {
  const half = freqs.length;
  const sign = inverse ? -1 : 1;
  for (let t = 0; t < T; t++) {
    const pos = offset + t;
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++) {
        const o = ((b * T + t) * H + h) * D;
        for (let d = 2 * half; d < D; d++) out[o + d] = x[o + d]!;
      }
    for (let i = 0; i < half; i++) {
      const angle = pos * freqs[i]!;
      const c = scale * Math.cos(angle);
      const s = sign * scale * Math.sin(angle);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          const o = ((b * T + t) * H + h) * D;
          const x1 = x[o + i]!;
          const x2 = x[o + i + half]!;
          out[o + i] = x1 * c - x2 * s;
          out[o + i + half] = x2 * c + x1 * s;
        }
      }
    }
  }
}

// q: [B, Tq, Hq, D], k, v: [B, Tk, Hkv, D] -> out: [B, Tq, Hq, D], att: [B, Hq, Tq, Tk]
export function attentionForward(
  out: Float32Array,
  att: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  d: AttentionDims,
): void {
  const { B, Tq, Tk, Hq, Hkv, D } = d;
  const group = Hq / Hkv;
  const scale = attentionScale(d);
  const cap = d.softcap ?? 0;
  att.fill(0);
  out.fill(0);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      for (let i = 0; i < Tq; i++) {
        const qo = ((b * Tq + i) * Hq + h) * D;
        const ao = ((b * Hq + h) * Tq + i) * Tk;
        const [start, limit] = keyRange(d, i);
        let mx = -Infinity;
        for (let j = start; j < limit; j++) {
          const ko = ((b * Tk + j) * Hkv + hk) * D;
          let s = 0;
          for (let c = 0; c < D; c++) s += q[qo + c]! * k[ko + c]!;
          att[ao + j] = s * scale;
          if (cap) att[ao + j] = cap * Math.tanh(att[ao + j]! / cap);
          mx = Math.max(mx, att[ao + j]!); // the stored f32 value, so that the max entry gives exp(0) = 1
        }
        let sum = 0;
        for (let j = start; j < limit; j++) {
          const e = Math.exp(att[ao + j]! - mx);
          att[ao + j] = e;
          sum += e;
        }
        for (let j = start; j < limit; j++) {
          const p = att[ao + j]! / sum;
          att[ao + j] = p;
          const vo = ((b * Tk + j) * Hkv + hk) * D;
          for (let c = 0; c < D; c++) out[qo + c]! += p * v[vo + c]!;
        }
      }
    }
  }
}

export function attentionBackward(
  dq: Float32Array | null,
  dk: Float32Array | null,
  dv: Float32Array | null,
  dout: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  att: Float32Array,
  d: AttentionDims,
): void {
  const { B, Tq, Tk, Hq, Hkv, D } = d;
  const group = Hq / Hkv;
  const scale = attentionScale(d);
  const cap = d.softcap ?? 0;
  dq?.fill(0);
  dk?.fill(0);
  dv?.fill(0);
  const dscore = new Float32Array(Tk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / group);
      for (let i = 0; i < Tq; i++) {
        const qo = ((b * Tq + i) * Hq + h) * D;
        const ao = ((b * Hq + h) * Tq + i) * Tk;
        const [start, limit] = keyRange(d, i);
        // in the forward pass: out_i = sum_j p_ij v_j, so dp_ij = dout_i . v_j and dv_j += p_ij dout_i
        let dot = 0;
        for (let j = start; j < limit; j++) {
          const vo = ((b * Tk + j) * Hkv + hk) * D;
          const p = att[ao + j]!;
          let dp = 0;
          for (let c = 0; c < D; c++) {
            dp += dout[qo + c]! * v[vo + c]!;
            if (dv) dv[vo + c]! += p * dout[qo + c]!;
          }
          dscore[j] = dp;
          dot += dp * p;
        }
        // softmax backward, then the soft cap c = cap tanh(s / cap) (dc/ds = 1 - tanh², s recomputed as
        // the forward pass rounded it), then s_ij = scale * q_i . k_j
        for (let j = start; j < limit; j++) {
          let ds = att[ao + j]! * (dscore[j]! - dot) * scale;
          const ko = ((b * Tk + j) * Hkv + hk) * D;
          if (cap) {
            let s = 0;
            for (let c = 0; c < D; c++) s += q[qo + c]! * k[ko + c]!;
            const t = Math.tanh(Math.fround(s * scale) / cap);
            ds *= 1 - t * t;
          }
          for (let c = 0; c < D; c++) {
            if (dq) dq[qo + c]! += ds * k[ko + c]!;
            if (dk) dk[ko + c]! += ds * q[qo + c]!;
          }
        }
      }
    }
  }
}
