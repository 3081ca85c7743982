/** The worker-thread wasm backend: matches ref, and gives bit-identical results at 1 and 2 threads. */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type { AttentionDims, MatmulDims } from "../../src/kernels/backend.js";
import { backend } from "../../src/kernels/index.js";
import { refBackend } from "../../src/kernels/ref/index.js";
import { wasmAvailable } from "../../src/kernels/wasm/index.js";
import { chunkSizes, planGemm } from "../../src/kernels/wasm/matmul.js";
import { getThreads, setThreads, threadedWasmBackend as wasm } from "../../src/kernels/wasm/node/pool.js";
import { setMaxChunkFloats } from "../../src/kernels/wasm/runtime.js";
import { Rng } from "../../src/tensor/random.js";
import { assertClose } from "../helpers.js";

const rng = new Rng(3);
const randn = (n: number, std = 1) => Float32Array.from({ length: n }, () => std * rng.normal());

/** One contiguous (batch-strided) matmul of the given shape; unset fields: 1 and false. */
const dims = (s: Partial<MatmulDims>): MatmulDims => ({
  batch: 1,
  M: 1,
  N: 1,
  K: 1,
  transA: false,
  transB: false,
  accumulate: false,
  ...s,
  strideA: s.M! * s.K!,
  strideB: s.K! * s.N!,
  strideOut: s.M! * s.N!,
});

/** Runs fn at 1 and at 2 threads and returns both results. */
function atOneAndTwo(fn: () => Float32Array[]): [Float32Array[], Float32Array[]] {
  setThreads(1);
  const one = fn();
  setThreads(2);
  const two = fn();
  return [one, two];
}

describe("threaded wasm backend", { skip: !wasmAvailable() && "WebAssembly SIMD unavailable" }, () => {
  const initial = getThreads();
  after(() => setThreads(initial));

  it("is the registered wasm backend once the pool is imported", () => {
    if (process.env.LORA_BACKEND && process.env.LORA_BACKEND !== "wasm") return;
    assert.equal(backend(), wasm);
  });

  it("matmul: same bits at 1 and 2 threads, and matches ref (rows, columns and batch splits)", () => {
    const shapes: Partial<MatmulDims>[] = [
      { batch: 1, M: 256, K: 96, N: 200 },
      { batch: 1, M: 4000, K: 128, N: 8, transB: true },
      { batch: 1, M: 80, K: 64, N: 900, transA: true },
      { batch: 16, M: 64, K: 64, N: 64, transB: true },
      { batch: 3, M: 70, K: 300, N: 70, accumulate: true },
      // 2 threads get 64 columns each, so they read A in place where 1 thread packs it: same bits
      { batch: 1, M: 64, K: 512, N: 128 },
    ];
    for (const s of shapes) {
      const d = dims(s);
      assert.equal(planGemm(d, 2).length, 2, `matmul ${JSON.stringify(s)} should split in 2`);
      const a = randn(d.batch * d.M * d.K, 1 / Math.sqrt(d.K));
      const b = randn(d.batch * d.K * d.N);
      const init = randn(d.batch * d.M * d.N);
      const [[one], [two]] = atOneAndTwo(() => {
        const out = init.slice();
        wasm.matmul(out, a, b, d);
        return [out];
      });
      assert.deepEqual(two, one, `matmul ${JSON.stringify(s)}: 2 threads differ from 1`);
      const want = init.slice();
      refBackend.matmul(want, a, b, d);
      assertClose(one!, want, "f32", `matmul ${JSON.stringify(s)} vs ref`);
    }
  });

  it("matmul in chunks (rows, columns, KC blocks of depth): same bits as one call, at 1 and 2 threads", () => {
    assert.deepEqual(chunkSizes(256, 50257, 768), [256, 10056, 768]);
    assert.deepEqual(chunkSizes(256, 768, 50257), [256, 768, 10240]);
    const shapes: Partial<MatmulDims>[] = [
      { M: 40, K: 96, N: 700, transB: true },
      { M: 36, K: 1100, N: 72 },
      { M: 36, K: 1100, N: 72, transA: true, accumulate: true },
      { M: 900, K: 64, N: 40, transA: true, transB: true },
      { M: 300, K: 600, N: 300, accumulate: true },
    ];
    for (const s of shapes) {
      const d = dims(s);
      const a = randn(d.M * d.K, 1 / Math.sqrt(d.K));
      const b = randn(d.K * d.N);
      const init = randn(d.M * d.N);
      const call = () => {
        const out = init.slice();
        wasm.matmul(out, a, b, d);
        return [out];
      };
      const [[whole]] = atOneAndTwo(call);
      const prev = setMaxChunkFloats(20_000);
      try {
        const [m, n, k] = chunkSizes(d.M, d.N, d.K);
        assert.ok(m < d.M || n < d.N || k < d.K, `matmul ${JSON.stringify(s)} should be chunked`);
        const [[one], [two]] = atOneAndTwo(call);
        assert.deepEqual(one, whole, `matmul ${JSON.stringify(s)}: chunked differs from one call`);
        assert.deepEqual(two, whole, `matmul ${JSON.stringify(s)}: chunked at 2 threads differs`);
      } finally {
        setMaxChunkFloats(prev);
      }
      const want = init.slice();
      refBackend.matmul(want, a, b, d);
      assertClose(whole!, want, "f32", `matmul ${JSON.stringify(s)} vs ref`);
    }
  });

  it("elementwise, AdamW and norms (split by elements or rows): same bits at 1 and 2 threads, and match ref", () => {
    const n = 600_003;
    const x = randn(n, 2);
    const g = randn(n);
    const [N, C] = [400, 700];
    const xn = randn(N * C, 3);
    const gn = randn(N * C);
    const [w, bias] = [randn(C), randn(C)];
    const run = (k0: typeof wasm) => {
      const res: Float32Array[] = [];
      const out = (len: number, f: (o: Float32Array) => void) => {
        const o = new Float32Array(len);
        f(o);
        res.push(o);
        return o;
      };
      out(n, (o) => k0.geluForward(o, x));
      out(n, (o) => k0.geluBackward(o, g, x));
      out(n, (o) => k0.siluForward(o, x));
      out(n, (o) => k0.siluBackward(o, g, x));
      out(n, (o) => k0.scale(o, x, 0.37));
      const [p, m, v] = [x.slice(), g.map((e) => e * 0.1), g.map((e) => e * e)];
      k0.adamw(p, g, m, v, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 3 });
      res.push(p, m, v);
      const [mean, rstd] = [new Float32Array(N), new Float32Array(N)];
      out(N * C, (o) => k0.layerNormForward(o, mean, rstd, xn, w, bias, N, C, 1e-5));
      res.push(mean, rstd);
      out(N * C, (o) => k0.layerNormBackward(o, null, null, gn, xn, w, mean, rstd, N, C));
      const rs = new Float32Array(N);
      out(N * C, (o) => k0.rmsNormForward(o, rs, xn, w, N, C, 1e-6));
      res.push(rs);
      out(N * C, (o) => k0.rmsNormBackward(o, null, gn, xn, w, rs, N, C));
      return res;
    };
    const [one, two] = atOneAndTwo(() => run(wasm));
    two.forEach((r, i) => assert.deepEqual(r, one[i], `result ${i}: 2 threads differ from 1`));
    const want = run(refBackend);
    want.forEach((r, i) => assertClose(one[i]!, r, "f32", `result ${i} vs ref`));
  });

  it("empty inputs return at once at 2 threads (no parts to run)", () => {
    setThreads(2);
    const e = new Float32Array(0);
    wasm.geluForward(e, e);
    wasm.scale(e, e, 2);
    wasm.layerNormForward(e, e, e, e, e, e, 0, 0, 1e-5);
    wasm.softmaxForward(e, e, 0, 8);
    wasm.crossEntropyForward(e, e, e, new Int32Array(0), 0, 8);
  });

  it("attention, softmax and cross-entropy: same bits at 1 and 2 threads, and match ref", () => {
    const d: AttentionDims = { B: 2, Tq: 48, Tk: 64, Hq: 8, Hkv: 2, D: 32, causal: true };
    const nq = d.B * d.Tq * d.Hq * d.D;
    const nk = d.B * d.Tk * d.Hkv * d.D;
    const na = d.B * d.Hq * d.Tq * d.Tk;
    const [q, k, v, g] = [randn(nq), randn(nk), randn(nk), randn(nq)];
    const [N, V] = [16, 50257];
    const logits = randn(N * V, 2);
    const targets = Int32Array.from({ length: N }, (_, i) => (i === 3 ? -100 : rng.int(V)));
    const run = (k0: typeof wasm) => {
      const out = new Float32Array(nq);
      const att = new Float32Array(na);
      k0.attentionForward(out, att, q, k, v, d);
      const [dq, dk, dv] = [new Float32Array(nq), new Float32Array(nk), new Float32Array(nk)];
      k0.attentionBackward(dq, dk, dv, g, q, k, v, att, d);
      const losses = new Float32Array(N);
      const lse = new Float32Array(N);
      k0.crossEntropyForward(losses, lse, logits, targets, N, V);
      const dlogits = new Float32Array(N * V);
      k0.crossEntropyBackward(dlogits, logits, lse, targets, N, V, 1 / N);
      const sm = new Float32Array(N * V);
      k0.softmaxForward(sm, logits, N, V);
      return [out, att, dq, dk, dv, losses, lse, dlogits, sm];
    };
    const [one, two] = atOneAndTwo(() => run(wasm));
    two.forEach((x, i) => assert.deepEqual(x, one[i], `result ${i}: 2 threads differ from 1`));
    const prev = setMaxChunkFloats(3 * V);
    try {
      // cross-entropy in chunks of 3 rows: same bits
      const [chunked] = atOneAndTwo(() => run(wasm));
      chunked.forEach((x, i) => assert.deepEqual(x, one[i], `result ${i}: chunked differs`));
    } finally {
      setMaxChunkFloats(prev);
    }
    const want = run(refBackend);
    want.forEach((w, i) => assertClose(one[i]!, w, "f32", `result ${i} vs ref`));
  });
});
