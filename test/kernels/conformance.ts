/**
 * Conformance: a fast backend against the ref oracle, every Backend method (odd shapes, every transpose,
 * forward and backward, 16-bit weights), at f32 tolerance. Each backend's test file calls this once.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ropeFrequencies } from "../../src/autograd/ops.js";
import type { AttentionDims, Backend, HalfArray, MatmulDims } from "../../src/kernels/backend.js";
import { refBackend } from "../../src/kernels/ref/index.js";
import { encodeFromFloat32 } from "../../src/tensor/dtype.js";
import { Rng } from "../../src/tensor/random.js";
import { assertClose } from "../helpers.js";

const rng = new Rng(42);
const randn = (n: number, std = 1) => Float32Array.from({ length: n }, () => std * rng.normal());
const ids = (n: number, V: number) => Int32Array.from({ length: n }, () => rng.int(V));

/** Runs fn on ref and on wasm with copies of the same buffers, and compares every buffer afterwards. */
function sameAs(
  fast: Backend,
  label: string,
  bufs: Float32Array[],
  fn: (k: Backend, b: Float32Array[]) => void,
) {
  const copy = () => bufs.map((b) => b.slice());
  const want = copy();
  const got = copy();
  fn(refBackend, want);
  fn(fast, got);
  want.forEach((w, i) => {
    assertClose(got[i]!, w, "f32", `${label} buffer ${i}`);
  });
}

export function checkMatmul(
  k: Backend,
  d: Partial<MatmulDims> & { M: number; N: number; K: number },
  label: string,
) {
  const full: MatmulDims = {
    batch: 1,
    transA: false,
    transB: false,
    strideA: d.M * d.K,
    strideB: d.K * d.N,
    strideOut: d.M * d.N,
    accumulate: false,
    ...d,
  };
  const { batch, M, N, K, strideA, strideB, strideOut } = full;
  // A scaled by 1/sqrt(K) keeps outputs O(1), as with initialised weights: f32 rounding of a long
  // dot product then stays far below atol (unscaled, cancellation makes both backends' errors ~1e-5)
  const a = randn(Math.max(1, (batch - 1) * strideA + M * K), 1 / Math.sqrt(Math.max(K, 1)));
  const b = randn(Math.max(1, (batch - 1) * strideB + K * N));
  const out = randn((batch - 1) * strideOut + M * N);
  const want = out.slice();
  refBackend.matmul(want, a, b, full);
  k.matmul(out, a, b, full);
  assertClose(out, want, "f32", label);
}

/** Registers the conformance tests of `fast` (a thunk, so a skipped backend is never built). */
export function conformance(name: string, fast: () => Backend, skip: string | false): void {
  const same = (label: string, bufs: Float32Array[], fn: (k: Backend, b: Float32Array[]) => void) =>
    sameAs(fast(), label, bufs, fn);
  describe(`${name} backend vs ref`, { skip }, () => {
    it("matmul: transpose combos, odd sizes, skinny shapes, accumulate", () => {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          for (const [M, K, N] of [
            [1, 1, 1],
            [3, 7, 13],
            [13, 33, 7],
            [65, 129, 33],
            [33, 300, 65],
            [129, 8, 65],
            [64, 64, 4],
            [70, 4, 96],
            [40, 64, 8],
            [9, 520, 530],
            [129, 64, 33],
            [33, 129, 64],
            [65, 300, 4],
            // the AVX2 paths for skinny products: N = 8 (12-row tiles and the rows left over), N <= 32
            // (A in place), a few rows over B in place (with a partial last panel)
            [300, 260, 8],
            [30, 520, 5],
            [61, 70, 24],
            [8, 300, 70],
            [4, 520, 40],
            [5, 40, 33],
          ] as const) {
            const label = `matmul ${M}x${K}x${N} tA=${transA} tB=${transB}`;
            checkMatmul(fast(), { M, N, K, transA, transB }, label);
            checkMatmul(fast(), { M, N, K, transA, transB, accumulate: true }, `${label} accumulate`);
          }
        }
      }
    });

    it("matmul: batched, stride 0 broadcast, K = 0", () => {
      checkMatmul(fast(), { batch: 3, M: 7, N: 13, K: 33 }, "batch 3");
      checkMatmul(fast(), { batch: 4, M: 16, N: 16, K: 8, transB: true, strideB: 0 }, "broadcast B");
      // a shared B under a contiguous batch is folded into one product of batch * M rows
      checkMatmul(fast(), { batch: 5, M: 13, N: 40, K: 300, strideB: 0 }, "broadcast B, folded");
      checkMatmul(fast(), { batch: 4, M: 5, N: 9, K: 6, transA: true, strideA: 0 }, "broadcast A");
      checkMatmul(fast(), { batch: 2, M: 3, N: 5, K: 0 }, "K = 0");
      checkMatmul(fast(), { batch: 2, M: 3, N: 5, K: 0, accumulate: true }, "K = 0 accumulate");
      // every item adds into one output (a broadcast operand's gradient): items must not race
      const shared = { batch: 6, M: 64, N: 64, K: 40, strideOut: 0, accumulate: true };
      checkMatmul(fast(), { ...shared, transA: true }, "batched into one output, transA");
      checkMatmul(fast(), shared, "batched into one output");
    });

    it("binary and sumTo with broadcasting", () => {
      const cases: [number[], number[], number[]][] = [
        [
          [5, 7],
          [7, 1],
          [7, 1],
        ],
        [
          [4, 3, 9],
          [27, 9, 1],
          [0, 0, 1],
        ],
        [
          [4, 3, 9],
          [0, 1, 0],
          [27, 9, 1],
        ],
        [
          [2, 3, 5],
          [15, 5, 1],
          [5, 0, 1],
        ],
        [
          [6, 1, 10],
          [10, 10, 1],
          [1, 0, 0],
        ],
        [[1], [0], [0]],
        [
          [3, 4],
          [1, 3],
          [4, 1],
        ],
        [
          [2, 3, 4],
          [1, 8, 2],
          [0, 4, 1],
        ],
      ];
      for (const [shape, as, bs] of cases) {
        const total = shape.reduce((x, y) => x * y, 1);
        const span = (s: number[]) => shape.reduce((acc, n, d) => acc + (n - 1) * s[d]!, 0) + 1;
        for (const op of ["add", "mul"] as const) {
          same(
            `binary ${op} ${shape}`,
            [new Float32Array(total), randn(span(as)), randn(span(bs))],
            (k, [o, a, b]) => k.binary(op, o, a, b, shape, as, bs),
          );
        }
        same(`sumTo ${shape}`, [new Float32Array(span(bs)), randn(total)], (k, [o, g]) =>
          k.sumTo(o, g, shape, bs),
        );
      }
    });

    it("scale, slice, embedding", () => {
      same("scale", [new Float32Array(37), randn(37)], (k, [o, x]) => k.scale(o, x, 0.37));
      same("slice", [new Float32Array(5 * 3), randn(5 * 11)], (k, [o, x]) => k.slice(o, x, 5, 11, 4, 3));
      same("sliceBackward", [randn(5 * 11), randn(5 * 3)], (k, [dx, g]) =>
        k.sliceBackward(dx, g, 5, 11, 4, 3),
      );
      const t = ids(9, 13);
      same("embedding", [new Float32Array(9 * 7), randn(13 * 7)], (k, [o, w]) =>
        k.embeddingForward(o, w, t, 7),
      );
      same("embeddingBackward", [randn(13 * 7), randn(9 * 7)], (k, [dw, g]) =>
        k.embeddingBackward(dw, g, t, 7),
      );
    });

    it("layerNorm and rmsNorm forward and backward", () => {
      for (const [N, C] of [
        [3, 7],
        [5, 64],
        [2, 129],
      ] as const) {
        same(
          `layerNorm ${N}x${C}`,
          [
            new Float32Array(N * C),
            new Float32Array(N),
            new Float32Array(N),
            randn(N * C, 2),
            randn(C),
            randn(C),
          ],
          (k, [o, m, s, x, w, b]) => k.layerNormForward(o, m, s, x, w, b, N, C, 1e-5),
        );
        const x = randn(N * C, 2);
        const w = randn(C);
        const m = new Float32Array(N);
        const s = new Float32Array(N);
        refBackend.layerNormForward(new Float32Array(N * C), m, s, x, w, randn(C), N, C, 1e-5);
        same(
          `layerNormBackward ${N}x${C}`,
          [new Float32Array(N * C), randn(C), randn(C), randn(N * C), x, w, m, s],
          (k, [dx, dw, db, g, xx, ww, mm, ss]) => k.layerNormBackward(dx, dw, db, g, xx, ww, mm, ss, N, C),
        );
        same(`layerNormBackward dx only ${N}x${C}`, [new Float32Array(N * C), randn(N * C)], (k, [dx, g]) =>
          k.layerNormBackward(dx, null, null, g, x, w, m, s, N, C),
        );
        same(
          `rmsNorm ${N}x${C}`,
          [new Float32Array(N * C), new Float32Array(N), randn(N * C, 2), randn(C)],
          (k, [o, r, xx, ww]) => k.rmsNormForward(o, r, xx, ww, N, C, 1e-6),
        );
        const r = new Float32Array(N);
        refBackend.rmsNormForward(new Float32Array(N * C), r, x, w, N, C, 1e-6);
        same(
          `rmsNormBackward ${N}x${C}`,
          [new Float32Array(N * C), randn(C), randn(N * C)],
          (k, [dx, dw, g]) => k.rmsNormBackward(dx, dw, g, x, w, r, N, C),
        );
        same(`rmsNormBackward dweight only`, [randn(C), randn(N * C)], (k, [dw, g]) =>
          k.rmsNormBackward(null, dw, g, x, w, r, N, C),
        );
      }
    });

    it("gelu, silu, softmax forward and backward", () => {
      for (const n of [1, 3, 7, 33, 1000]) {
        const x = randn(n, 3);
        x[0] = n > 1 ? -30 : 0;
        same(`gelu ${n}`, [new Float32Array(n), x], (k, [o, xx]) => k.geluForward(o, xx));
        same(`geluBackward ${n}`, [new Float32Array(n), randn(n), x], (k, [dx, g, xx]) =>
          k.geluBackward(dx, g, xx),
        );
        same(`silu ${n}`, [new Float32Array(n), x], (k, [o, xx]) => k.siluForward(o, xx));
        same(`siluBackward ${n}`, [new Float32Array(n), randn(n), x], (k, [dx, g, xx]) =>
          k.siluBackward(dx, g, xx),
        );
      }
      // soft-capping: values far inside the cap (the polynomial branch), near it and far past it (saturated)
      for (const n of [1, 3, 7, 33, 1000]) {
        for (const cap of [3, 30]) {
          const x = randn(n, 10);
          x[0] = n > 1 ? 1e-4 : -200;
          if (n > 2) x[1] = -0.7 * cap;
          same(`softcap ${n} cap ${cap}`, [new Float32Array(n), x], (k, [o, xx]) =>
            k.softcapForward(o, xx, cap),
          );
          const y = new Float32Array(n);
          refBackend.softcapForward(y, x, cap);
          same(`softcapBackward ${n} cap ${cap}`, [new Float32Array(n), randn(n)], (k, [dx, g]) =>
            k.softcapBackward(dx, g, y, cap),
          );
        }
      }
      for (const [N, C] of [
        [1, 1],
        [3, 7],
        [4, 65],
      ] as const) {
        same(`softmax ${N}x${C}`, [new Float32Array(N * C), randn(N * C, 4)], (k, [o, x]) =>
          k.softmaxForward(o, x, N, C),
        );
        const y = new Float32Array(N * C);
        refBackend.softmaxForward(y, randn(N * C, 2), N, C);
        same(`softmaxBackward ${N}x${C}`, [new Float32Array(N * C), randn(N * C)], (k, [dx, g]) =>
          k.softmaxBackward(dx, g, y, N, C),
        );
      }
    });

    it("rope forward and inverse, whole and partial rotary, scaled", () => {
      const [B, T, H, D] = [2, 5, 3, 12];
      for (const [R, scale] of [
        [D, 1],
        [8, 1.19],
        [2, 1],
      ] as const) {
        for (const inverse of [false, true]) {
          same(
            `rope R=${R} scale=${scale} inverse=${inverse}`,
            [new Float32Array(B * T * H * D), randn(B * T * H * D)],
            (k, [o, x]) => k.rope(o, x, B, T, H, D, 3, ropeFrequencies(R, 10000), scale, inverse),
          );
        }
      }
    });

    it("attention: causal, Tq < Tk, GQA, sliding window, own scale, soft cap, forward and backward", () => {
      const dims: AttentionDims[] = [
        { B: 2, Tq: 5, Tk: 5, Hq: 2, Hkv: 2, D: 8, causal: true },
        { B: 1, Tq: 3, Tk: 7, Hq: 4, Hkv: 2, D: 6, causal: true },
        { B: 2, Tq: 4, Tk: 6, Hq: 6, Hkv: 3, D: 5, causal: false },
        { B: 1, Tq: 1, Tk: 9, Hq: 4, Hkv: 1, D: 16, causal: true },
        { B: 2, Tq: 11, Tk: 11, Hq: 4, Hkv: 2, D: 8, causal: true, window: 4, scale: 0.3 },
        { B: 1, Tq: 2, Tk: 9, Hq: 2, Hkv: 1, D: 6, causal: true, window: 3 },
        { B: 1, Tq: 6, Tk: 6, Hq: 2, Hkv: 2, D: 4, causal: true, window: 1 },
        // soft caps that bite (raw scores reach about ±3√D · scale), with odd Tk for the SIMD tails
        { B: 2, Tq: 7, Tk: 7, Hq: 4, Hkv: 2, D: 8, causal: true, softcap: 1.5 },
        { B: 1, Tq: 3, Tk: 9, Hq: 2, Hkv: 1, D: 6, causal: true, window: 4, scale: 0.6, softcap: 2 },
        { B: 1, Tq: 5, Tk: 5, Hq: 3, Hkv: 3, D: 5, causal: false, softcap: 0.8 },
        { B: 1, Tq: 1, Tk: 13, Hq: 2, Hkv: 2, D: 16, causal: true, softcap: 50 },
        // decodes past native's 16-lane softmax blocks: a whole block, blocks and a tail, a negative
        // scale (the padding must stay out of the max), a window starting inside the first block
        { B: 1, Tq: 1, Tk: 16, Hq: 2, Hkv: 1, D: 8, causal: true, scale: -0.5 },
        { B: 3, Tq: 1, Tk: 33, Hq: 4, Hkv: 2, D: 8, causal: true },
        { B: 1, Tq: 1, Tk: 40, Hq: 2, Hkv: 2, D: 8, causal: true, window: 19 },
      ];
      for (const d of dims) {
        const nq = d.B * d.Tq * d.Hq * d.D;
        const nk = d.B * d.Tk * d.Hkv * d.D;
        const na = d.B * d.Hq * d.Tq * d.Tk;
        const [q, k, v] = [randn(nq), randn(nk), randn(nk)];
        same(`attention ${JSON.stringify(d)}`, [new Float32Array(nq), new Float32Array(na)], (kb, [o, att]) =>
          kb.attentionForward(o, att, q, k, v, d),
        );
        const att = new Float32Array(na);
        refBackend.attentionForward(new Float32Array(nq), att, q, k, v, d);
        const g = randn(nq);
        same(
          `attentionBackward ${JSON.stringify(d)}`,
          [new Float32Array(nq), new Float32Array(nk), new Float32Array(nk)],
          (kb, [dq, dk, dv]) => kb.attentionBackward(dq, dk, dv, g, q, k, v, att, d),
        );
        same(`attentionBackward dv only`, [new Float32Array(nk)], (kb, [dv]) =>
          kb.attentionBackward(null, null, dv, g, q, k, v, att, d),
        );
      }
    });

    it("attention: huge scores give a one-hot softmax, not NaN (as PyTorch)", () => {
      const d = { B: 1, Tq: 4, Tk: 4, Hq: 1, Hkv: 1, D: 4, causal: true };
      const q = Float32Array.from({ length: 16 }, (_, i) => Math.sin(i));
      const k = q.map((x) => x * 0.5);
      k[2] = 1e30; // key 0 scores about ±1e29 against every query
      const v = q.map((x) => x + 1);
      same("attention, huge scores", [new Float32Array(16), new Float32Array(16)], (kb, [o, att]) => {
        kb.attentionForward(o, att, q, k, v, d);
        assert.ok(o.every(Number.isFinite), `${kb.name}: ${o}`);
      });
    });

    it("cross-entropy over vocab 50257 with ignored targets", () => {
      for (const [N, V] of [
        [3, 7],
        [4, 50257],
      ] as const) {
        const logits = randn(N * V, 3);
        const t = ids(N, V);
        t[1] = -100;
        same(`crossEntropy ${N}x${V}`, [new Float32Array(N), new Float32Array(N)], (k, [l, s]) =>
          k.crossEntropyForward(l, s, logits, t, N, V),
        );
        const lse = new Float32Array(N);
        refBackend.crossEntropyForward(new Float32Array(N), lse, logits, t, N, V);
        same(`crossEntropyBackward ${N}x${V}`, [new Float32Array(N * V)], (k, [dl]) =>
          k.crossEntropyBackward(dl, logits, lse, t, N, V, 1 / N),
        );
      }
    });

    it("adamw over several steps", () => {
      const n = 103;
      const bufs = [randn(n), new Float32Array(n), new Float32Array(n)];
      const grads = [randn(n), randn(n), randn(n), randn(n)];
      same("adamw", bufs, (k, [p, m, v]) => {
        grads.forEach((g, i) =>
          k.adamw(p, g, m, v, {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weightDecay: 0.01,
            step: i + 1,
          }),
        );
      });
    });

    it("16-bit weights: matmul with a bf16 or f16 b operand, embedding rows", () => {
      for (const dtype of ["bf16", "f16"] as const) {
        for (const transB of [false, true]) {
          for (const [M, K, N] of [
            [1, 1, 1],
            [3, 7, 13],
            [17, 65, 127],
            [33, 300, 65],
            [65, 8, 33],
          ] as const) {
            const a = randn(M * K, 1 / Math.sqrt(K));
            const b = halfOf(randn(K * N), dtype);
            const d: MatmulDims = {
              batch: 1,
              M,
              N,
              K,
              transA: false,
              transB,
              strideA: 0,
              strideB: 0,
              strideOut: 0,
              accumulate: false,
            };
            for (const accumulate of [false, true]) {
              same(
                `matmul ${dtype} ${M}x${K}x${N} tB=${transB} acc=${accumulate}`,
                [randn(M * N)],
                (k, [o]) => k.matmul(o, a, b, { ...d, accumulate }),
              );
            }
          }
        }
        const w = halfOf(randn(13 * 7), dtype);
        const t = ids(9, 13);
        same(`embedding ${dtype}`, [new Float32Array(9 * 7)], (k, [o]) => k.embeddingForward(o, w, t, 7));
      }
    });

    it("aliasing: out may be an input", () => {
      const x = randn(10);
      const want = x.slice();
      refBackend.scale(want, want, 2);
      fast().scale(x, x, 2);
      assert.deepEqual(x, want);
    });
  });
}

/** x rounded to a 16-bit weight of `dtype`. */
function halfOf(x: Float32Array, dtype: "bf16" | "f16"): HalfArray {
  const enc = encodeFromFloat32(x, dtype === "bf16" ? "BF16" : "F16");
  return { dtype, bits: new Uint16Array(enc.buffer, enc.byteOffset, x.length) };
}
