/**
 * The native backend: C++ kernels (native/src) called on the tensors' own memory, with no copies, split
 * between the addon's own threads. AVX-512 (with bf16 dot products where the CPU has AVX512_BF16), AVX2
 * or portable C++ is chosen at load time by the addon.
 */
import { float32ToHalf } from "../../../tensor/dtype.js";
import {
  type AttentionDims,
  attentionScale,
  type Backend,
  isHalf,
  type LoraRowWeights,
  type WeightArray,
} from "../../backend.js";

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
  const { smallK, smallKLanes: lanes } = k.info();
  // a LoRA B's small-k panels, by B's array (the Backend contract: a B array is not changed while used)
  const panels = new WeakMap<Float32Array, Float32Array>();
  const panelsOf = (B: Float32Array, outF: number, r: number) => {
    let p = panels.get(B);
    if (!p) {
      p = new Float32Array(Math.ceil(outF / lanes) * r * lanes);
      n.packLoraB(p, B, outF, r);
      panels.set(B, p);
    }
    return p;
  };
  // each adapter's weights on a layer as the kernel's handle (loraWeights), by A's array: made once, while
  // the rows of a busy server's batch change on most steps
  const weights = new WeakMap<
    Float32Array,
    { handle: { id: number }; B: Float32Array; scaling: number; inF: number; outF: number }
  >();
  const handleOf = (g: LoraRowWeights, inF: number, outF: number) => {
    let h = weights.get(g.A);
    if (!h || h.B !== g.B || h.scaling !== g.scaling || h.inF !== inF || h.outF !== outF) {
      const panels = g.r <= smallK ? panelsOf(g.B, outF, g.r) : null;
      // the holder keeps A, B and the panels as its properties: the handle goes with A (a native
      // reference to A would keep it, and this entry, forever)
      const handle = n.loraWeights({ A: g.A, B: g.B, panels }, g.r, g.scaling, inF, outF);
      h = { handle, B: g.B, scaling: g.scaling, inF, outF };
      weights.set(g.A, h);
    }
    return h.handle;
  };
  // A loraRows / linearRows call's groups as the addon reads them: the ids of the groups' weights
  // handles, written per call (a number the addon looks up, where reading handles out of a JS array took
  // 0.4 us a group), and [G counts][their rows]. A frozen rows array (a batch plan's, passed to every
  // layer on every step until the batch changes) keeps its index, off V8's heap, so it is made once a
  // plan, not once a layer; any other is written into a scratch buffer on each call. (With an index per
  // layer and plan, handle ids and rows in one, and the groups packed per layer, a step that made its plan
  // anew took 0.15 ms more than one that kept it, against 0.03 ms now: stories260K, 16 rows on 3
  // adapters and the base, a Xeon; a busy server makes one on about a tenth of its steps.)
  const rowIndexes = new WeakMap<readonly Int32Array[], Int32Array>();
  // a frozen weights array's handle ids, kept with the handles (so no id in it is freed and reused):
  // one lookup a call instead of one a group
  const weightIds = new WeakMap<
    readonly LoraRowWeights[],
    { ids: number[]; handles: unknown[]; inF: number; outF: number }
  >();
  // writes the groups' ids into scratchIds(G) and returns their rows' index
  const groupIndex = (
    ws: readonly LoraRowWeights[],
    rows: readonly Int32Array[],
    inF: number,
    outF: number,
  ) => {
    const G = ws.length;
    if (rows.length !== G) throw new Error(`loraRows: ${G} adapters' weights for ${rows.length} row groups`);
    const ids = scratchIds(G);
    let kept = weightIds.get(ws);
    if (!kept || kept.inF !== inF || kept.outF !== outF) {
      const handles = ws.map((w) => handleOf(w, inF, outF));
      kept = { ids: handles.map((h) => h.id), handles, inF, outF };
      if (Object.isFrozen(ws)) weightIds.set(ws, kept);
    }
    for (let i = 0; i < G; i++) ids[i] = kept.ids[i]!;
    let idx = rowIndexes.get(rows);
    if (idx) return idx;
    let m = 0;
    for (const r of rows) m += r.length;
    const keep = Object.isFrozen(rows);
    idx = keep ? new Int32Array(new ArrayBuffer(4 * (G + m))) : scratchInts(G + m);
    let at = G;
    for (let i = 0; i < G; i++) {
      idx[i] = rows[i]!.length;
      idx.set(rows[i]!, at);
      at += rows[i]!.length;
    }
    if (keep) rowIndexes.set(rows, idx);
    return idx;
  };
  // Small index arrays for the addon go through scratch buffers, rewritten per call (one for rows, one
  // for handle ids: a call passes both), each grown by doubling: a small typed array made in JS lives on
  // V8's heap, and N-API moves it off the heap the first time it is handed over (an allocation and a
  // copy). For the rows of a loraRows call that cost 5 of its 6.6 us whenever the batch had changed
  // (stories260K, 16 rows, a Xeon); a buffer made as an ArrayBuffer is off the heap.
  const int32Scratch = (initial: number) => {
    let buf = new Int32Array(new ArrayBuffer(4 * initial));
    return (n: number) =>
      buf.length >= n ? buf : (buf = new Int32Array(new ArrayBuffer(4 * Math.max(n, 2 * buf.length))));
  };
  const scratchInts = int32Scratch(256);
  const scratchIds = int32Scratch(16);
  // an op's shape and strides, in one scratch Float64Array (as the index arrays above)
  let f64 = new Float64Array(new ArrayBuffer(8 * 64));
  const dims = (...parts: readonly (readonly number[])[]) => {
    const len = parts.reduce((s, p) => s + p.length, 0);
    if (f64.length < len) f64 = new Float64Array(new ArrayBuffer(8 * 2 * len));
    let at = 0;
    for (const p of parts) for (const v of p) f64[at++] = v;
    return f64.subarray(0, len);
  };
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
      n.binary(op === "mul", out, a, b, dims(shape, as, bs));
    },
    sumTo(out, g, shape, os) {
      n.sumTo(out, g, dims(shape, os));
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
    ropeRows(out, x, B, H, D, offsets, freqs, scale) {
      const at = scratchInts(B).subarray(0, B);
      at.set(offsets);
      n.ropeRows(out, x, B, H, D, at, freqs, scale);
    },
    attentionForward(out, att, q, k2, v, d) {
      n.attentionForward(out, att, q, k2, v, ...attentionArgs(d));
    },
    // one call (one split between threads) for every row of a batched decode, over one pool of caches
    attentionRowsForward(out, q, k2, v, keys, values, at, d) {
      n.attentionRowsForward(
        out,
        q,
        k2,
        v,
        keys,
        values,
        at,
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
    // every adapter group of a layer in one call (native/src/lora_rows.cc): each group's weights handle's
    // id and its rows (groupIndex)
    loraRowsForward(y, x, inF, outF, ws, rows, chunk) {
      const idx = groupIndex(ws, rows, inF, outF);
      n.loraRows(y, x, inF, outF, scratchIds(ws.length), idx, ws.length, Math.min(chunk, 2 ** 31 - 1));
    },
    // the base product and the LoRA term of a batched decode's layer in one call (addon.cc linearRows)
    linearRowsForward(y, x, w, M, N, K, ws, rows, chunk) {
      const idx = groupIndex(ws, rows, K, N);
      const [bits, btype] = unpack(w);
      n.linearRows(
        y,
        x,
        bits,
        btype,
        M,
        N,
        K,
        Math.min(chunk, 2 ** 31 - 1),
        scratchIds(ws.length),
        idx,
        ws.length,
      );
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
