/**
 * The native backend: C++ kernels (native/src) called on the tensors' own memory, with no copies, split
 * between the addon's own threads. AVX-512 (with bf16 dot products where the CPU has AVX512_BF16), AVX2
 * or portable C++ is chosen at load time by the addon.
 */
import { float32ToHalf } from "../../../tensor/dtype.js";
import { type AttentionDims, attentionScale, type Backend, isHalf, type WeightArray } from "../../backend.js";

/** AttentionDims as the addon's scalar arguments (native/src/addon.cc attn_dims). */
const attentionArgs = (d: AttentionDims) =>
  [d.B, d.Tq, d.Tk, d.Hq, d.Hkv, d.D, d.causal, attentionScale(d), d.window ?? 0, d.softcap ?? 0] as const;

import type { NativeAddon } from "./addon.js";

const BTYPE = { f32: 0, bf16: 1, f16: 2 } as const;

function unpack(w: WeightArray): [Float32Array | Uint16Array, number] {
  return isHalf(w) ? [w.bits, BTYPE[w.dtype]] : [w, BTYPE.f32];
}

/**
 * How fast a product with a bf16 weight runs here against f32 (f32 time / bf16 time), timed once for
 * `lora doctor`: x [256, 768] @ W^T [768, 768], a Linear's forward, alternating, best of 3 each. Only
 * shown: `--base-dtype auto` follows the addon's fixed rule (bf16Faster), since a timing taken under
 * load can differ between processes, and a run and its resume must pick the same dtype.
 */
export function bf16Speedup(k: NativeAddon): number {
  let r = speedups.get(k);
  if (r === undefined) speedups.set(k, (r = measureBf16(k)));
  return r;
}
const speedups = new WeakMap<NativeAddon, number>();

function measureBf16(k: NativeAddon): number {
  if (!k.info().bf16) return 1;
  const [M, K, N] = [256, 768, 768];
  const x = new Float32Array(M * K).map((_, i) => Math.sin(i));
  const w = new Float32Array(N * K).map((_, i) => Math.cos(i) / 32);
  const half = float32ToHalf(w, "bf16");
  const out = new Float32Array(M * N);
  const time = (bits: Float32Array | Uint16Array, btype: number) => {
    const t0 = performance.now();
    k.matmul(out, x, bits, btype, 1, M, N, K, false, true, 0, 0, 0, false, false);
    return performance.now() - t0;
  };
  let f32 = Number.POSITIVE_INFINITY;
  let bf16 = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 4; round++) {
    const a = time(w, BTYPE.f32);
    const b = time(half, BTYPE.bf16);
    if (round === 0) continue; // warm-up
    f32 = Math.min(f32, a);
    bf16 = Math.min(bf16, b);
  }
  return f32 / bf16;
}

export function createNativeBackend(k: NativeAddon): Backend {
  // biome-ignore lint/suspicious/noExplicitAny: the addon's functions are untyped N-API exports
  const n = k as any;
  const smallK = k.info().smallK;
  // a LoRA B's small-k panels, by B's array (the Backend contract: a B array is not changed while used)
  const panels = new WeakMap<Float32Array, Float32Array>();
  const panelsOf = (B: Float32Array, outF: number, r: number) => {
    let p = panels.get(B);
    if (!p) {
      p = new Float32Array(Math.ceil(outF / 8) * r * 8);
      n.packLoraB(p, B, outF, r);
      panels.set(B, p);
    }
    return p;
  };
  const loraPlans = new WeakMap<object, { plan: unknown; inF: number; outF: number }>();
  return {
    name: "native",
    fastBf16: k.info().bf16Faster,
    // INVARIANT_ROWS in native/src/gemm.h (64): a rowInvariant product up to there takes the GEMV, whose
    // dots are the same whatever M is
    invariantRows: k.info().invariantRows,
    matmul(out, a, b, d) {
      const [bits, btype] = unpack(b);
      n.matmul(
        out,
        a,
        bits,
        btype,
        d.batch,
        d.M,
        d.N,
        d.K,
        d.transA,
        d.transB,
        d.strideA,
        d.strideB,
        d.strideOut,
        d.accumulate,
        d.rowInvariant ?? false,
      );
    },
    binary(op, out, a, b, shape, as, bs) {
      n.binary(op === "mul", out, a, b, Float64Array.from([...shape, ...as, ...bs]));
    },
    sumTo(out, g, shape, os) {
      n.sumTo(out, g, Float64Array.from([...shape, ...os]));
    },
    scale: (out, x, s) => n.scale(out, x, s),
    slice: (...a) => n.slice(...a),
    sliceBackward: (...a) => n.sliceBackward(...a),
    embeddingForward(out, weight, ids, C) {
      const [bits, btype] = unpack(weight);
      n.embeddingForward(out, bits, btype, ids, C);
    },
    embeddingBackward: (...a) => n.embeddingBackward(...a),
    layerNormForward: (...a) => n.layerNormForward(...a),
    layerNormBackward: (...a) => n.layerNormBackward(...a),
    rmsNormForward: (...a) => n.rmsNormForward(...a),
    rmsNormBackward: (...a) => n.rmsNormBackward(...a),
    geluForward: (...a) => n.geluForward(...a),
    geluBackward: (...a) => n.geluBackward(...a),
    siluForward: (...a) => n.siluForward(...a),
    siluBackward: (...a) => n.siluBackward(...a),
    softcapForward: (...a) => n.softcapForward(...a),
    softcapBackward: (...a) => n.softcapBackward(...a),
    softmaxForward: (...a) => n.softmaxForward(...a),
    softmaxBackward: (...a) => n.softmaxBackward(...a),
    rope: (...a) => n.rope(...a),
    ropeRows: (...a) => n.ropeRows(...a),
    attentionForward(out, att, q, k2, v, d) {
      n.attentionForward(out, att, q, k2, v, ...attentionArgs(d));
    },
    // one call (one split between threads) for every row of a batched decode
    attentionRowsForward(out, q, keys, values, d) {
      n.attentionRowsForward(
        out,
        q,
        keys,
        values,
        d.B,
        d.Hq,
        d.Hkv,
        d.D,
        d.causal,
        attentionScale(d),
        d.window ?? 0,
        d.softcap ?? 0,
      );
    },
    // every adapter group of a layer in one call (native/src/lora_rows.cc), the groups read once into a
    // plan kept beside the groups array (a steady batch passes the same array every step), each B of
    // rank <= smallK packed once into the kernel's panels
    loraRowsForward(y, x, inF, outF, groups, chunk) {
      let p = loraPlans.get(groups);
      if (!p || p.inF !== inF || p.outF !== outF) {
        const withPanels = groups.map((g) =>
          g.r <= smallK ? { ...g, panels: panelsOf(g.B, outF, g.r) } : g,
        );
        p = { plan: n.loraPlan(withPanels, inF, outF), inF, outF };
        loraPlans.set(groups, p);
      }
      n.loraRows(y, x, inF, outF, p.plan, Math.min(chunk, 2 ** 31 - 1));
    },
    attentionBackward(dq, dk, dv, dout, q, k2, v, att, d) {
      n.attentionBackward(dq, dk, dv, dout, q, k2, v, att, ...attentionArgs(d));
    },
    crossEntropyForward: (...a) => n.crossEntropyForward(...a),
    crossEntropyBackward: (...a) => n.crossEntropyBackward(...a),
    adamw(param, grad, m, v, p) {
      n.adamw(param, grad, m, v, p.lr, p.beta1, p.beta2, p.eps, p.weightDecay, p.step);
    },
  };
}
