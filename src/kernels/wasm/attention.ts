/**
 * RoPE and causal grouped-query attention through wasm. Attention runs per head as GEMMs on the strided
 * [B, T, H, D] head views (no transposed copies) and splits (batch, head) pairs between threads.
 */
import { attentionScale } from "../backend.js";
import { rowParts, type WasmOp } from "./runtime.js";

// x: [B, T, H, D] -> out; the cos/sin table [T, R/2] (times scale) is computed here in f64, as ref does
export const rope: WasmOp<"rope"> = (rt, out, x, B, T, H, D, offset, freqs, scale, inverse) => {
  const half = freqs.length;
  const sign = inverse ? -1 : 1;
  const { heap: h } = rt;
  h.reset();
  const px = h.put(x, B * T * H * D);
  const pcs = h.alloc(T * half * 8);
  const cs = h.f32(pcs, T * half * 2);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const angle = (offset + t) * freqs[i]!;
      cs[2 * (t * half + i)] = scale * Math.cos(angle);
      cs[2 * (t * half + i) + 1] = sign * scale * Math.sin(angle);
    }
  }
  h.k.rope!(px, px, pcs, B, T, H, D, 2 * half);
  h.get(out, px, B * T * H * D);
};

// q: [B, Tq, Hq, D], k, v: [B, Tk, Hkv, D] -> out: [B, Tq, Hq, D], att: [B, Hq, Tq, Tk]
export const attentionForward: WasmOp<"attentionForward"> = (rt, out, att, q, k, v, d) => {
  const { B, Tq, Tk, Hq, Hkv, D, causal } = d;
  const { heap: h, threads } = rt;
  h.reset();
  const pq = h.put(q, B * Tq * Hq * D);
  const pk = h.put(k, B * Tk * Hkv * D);
  const pv = h.put(v, B * Tk * Hkv * D);
  const po = h.alloc(B * Tq * Hq * D * 4);
  const pat = h.alloc(B * Hq * Tq * Tk * 4);
  const parts = rowParts(threads, B * Hq, Tq * Tk * D * 2);
  const gemmBytes = h.k.gemmScratchBytes!();
  const scratch = h.alloc(gemmBytes * parts.length);
  threads.run(
    h,
    "attentionForward",
    parts.map(([r0, r1], t) => [
      po,
      pat,
      pq,
      pk,
      pv,
      Tq,
      Tk,
      Hq,
      Hkv,
      D,
      +causal,
      attentionScale(d),
      d.window ?? 0,
      d.softcap ?? 0,
      scratch + t * gemmBytes,
      r0,
      r1,
    ]),
  );
  h.get(out, po, B * Tq * Hq * D);
  h.get(att, pat, B * Hq * Tq * Tk);
};

// dq, dk, dv overwritten (null: skipped); split by (batch, kv head) so dk, dv sum in one order
export const attentionBackward: WasmOp<"attentionBackward"> = (rt, dq, dk, dv, dout, q, k, v, att, d) => {
  const { B, Tq, Tk, Hq, Hkv, D, causal } = d;
  const { heap: h, threads } = rt;
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
  // per thread: GEMM packing scratch, then dP: [Tq, Tk], then with a soft cap the scores: [Tq, Tk]
  const gemmBytes = h.k.gemmScratchBytes!();
  const rowsBytes = Math.ceil((Tq * Tk * 4) / 64) * 64;
  const cap = d.softcap ?? 0;
  const partBytes = gemmBytes + rowsBytes * (cap ? 2 : 1);
  const scratch = h.alloc(partBytes * parts.length);
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
      attentionScale(d),
      d.window ?? 0,
      cap,
      scratch + t * partBytes,
      scratch + t * partBytes + gemmBytes,
      scratch + t * partBytes + gemmBytes + rowsBytes,
      r0,
      r1,
    ]),
  );
  if (dq) h.get(dq, pdq, nq);
  if (dk) h.get(dk, pdk, nk);
  if (dv) h.get(dv, pdv, nk);
};
