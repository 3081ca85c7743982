/**
 * Batch invariance, the kernels a batched decode relies on, on each backend:
 * - matmul with a transposed weight (x @ W^T, every Linear; f32, bf16 or f16): a `rowInvariant`
 *   product of up to `invariantRows` rows gives each row exactly (bit for bit) what that row alone gives, wherever the row falls (first,
 *   last, inside or at the edge of a register tile). Odd sizes cross the kernels' edge tiles, a depth
 *   over 256 crosses a cache block, N <= 8 takes the rank-side kernels.
 * - attentionRowsForward, where a backend has it: each row's k, v written after its cache in the pool (and
 *   nothing else), then each row equals attentionForward of that row alone, over ragged cache lengths
 *   at scattered places, with GQA, a sliding window and a soft cap; a place outside the pool refused.
 * - silu and gelu forward (element-wise over a batch): each row equals that row alone, for rows whose
 *   length is no multiple of the vector width (the tail of the row alone lies inside the batch's body).
 * - ropeRows, where a backend has it: each row equals rope of that row alone at its position.
 * - loraRowsForward, where a backend has it: the per-kernel path's bits (mixed ranks and scalings).
 * - linearRowsForward, where a backend has it: the bits of matmul then loraRows (f32 and 16-bit weights).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type AttentionDims,
  availableBackends,
  setBackend,
  singleMatmul,
  type WeightArray,
} from "../../src/kernels/index.js";
import "../../src/kernels/node/index.js";
import { batchInvariant } from "../../src/autograd/invariant.js";
import { linearRows, loraRows, packRows, rowWeights } from "../../src/autograd/rows.js";
import { float32ToHalf } from "../../src/tensor/dtype.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";

const rng = new Rng(7);
const randn = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
const SHAPES: [number, number][] = [
  [8, 64], // N, K: LoRA's B side (rank 8) and a rank-side product
  [17, 300],
  [100, 48],
  [64, 8],
  [37, 5], // few k (native: the small-k panels), a partial panel of outputs
  [19, 16], // the panels' largest K (native/src/gemm.h DOTS_SMALL_K)
  [21, 17], // the first K past them
  [23, 32],
];
const MAX_ROWS = 66; // past native's invariantRows (64)

for (const name of availableBackends()) {
  describe(`matmul rows are batch-invariant on ${name}`, () => {
    // f32, and the 16-bit weights --base-dtype gives (bf16 is the serve default where its products are faster)
    for (const dtype of ["f32", "bf16", "f16"] as const)
      it(`a row of an M-row x @ W^T equals the same row alone, for every M up to invariantRows (${dtype} weight)`, () => {
        const k = setBackend(name);
        const top = Math.min(MAX_ROWS, k.invariantRows ?? MAX_ROWS);
        for (const [N, K] of SHAPES) {
          const w32 = randn(N * K);
          const w: WeightArray = dtype === "f32" ? w32 : { dtype, bits: float32ToHalf(w32, dtype) };
          const x = randn(MAX_ROWS * K);
          const alone = new Float32Array(MAX_ROWS * N);
          for (let i = 0; i < MAX_ROWS; i++)
            k.matmul(
              alone.subarray(i * N, (i + 1) * N),
              x.subarray(i * K, (i + 1) * K),
              w,
              singleMatmul(1, N, K, { transB: true }),
            );
          for (let M = 2; M <= top; M++)
            for (const first of [0, MAX_ROWS - M]) {
              const out = new Float32Array(M * N);
              const d = singleMatmul(M, N, K, { transB: true, rowInvariant: true });
              k.matmul(out, x.subarray(first * K, (first + M) * K), w, d);
              for (let i = 0; i < M; i++) {
                const want = alone.subarray((first + i) * N, (first + i + 1) * N);
                const got = out.subarray(i * N, (i + 1) * N);
                assert.ok(
                  got.every((v, j) => Object.is(v, want[j])),
                  `${name}: row ${i} of ${M} (rows ${first}..) of [${M}, ${K}] @ ${dtype} [${N}, ${K}]^T differs from the row alone`,
                );
              }
            }
        }
      });
  });
}

for (const name of availableBackends()) {
  const k = setBackend(name);
  describe(`attentionRowsForward on ${name}`, { skip: !k.attentionRowsForward && `${name} has none` }, () => {
    // head shapes: D 12 (native's scalar decode path), D 8 (one 8-lane chunk), D 64 with 6 query heads on
    // one kv head (several chunks; a second block of heads, partial); key counts off and on multiples of 8
    for (const [Hq, Hkv, D] of [
      [6, 2, 12],
      [4, 2, 8],
      [6, 1, 64],
    ] as const)
      for (const extra of [{}, { window: 5 }, { softcap: 2 }] as Partial<AttentionDims>[])
        it(`each row writes its k, v after its cache in the pool, then equals attentionForward of that row alone (Hq ${Hq}, Hkv ${Hkv}, D ${D}, ${JSON.stringify(extra)})`, () => {
          const lengths = [0, 9, 3, 40, 17, 2, 63, 8, 16]; // cached positions (the row's is one more)
          const B = lengths.length;
          const row = Hkv * D;
          // regions in a scattered order with gaps between them, as a busy pool holds them
          const at = new Int32Array(2 * B);
          let next = 3;
          for (const b of [4, 0, 8, 2, 6, 1, 7, 3, 5]) {
            at[2 * b] = next;
            at[2 * b + 1] = lengths[b]!;
            next += lengths[b]! + 1 + (b % 3);
          }
          const P = next + 2;
          const keys = randn(P * row);
          const values = randn(P * row);
          const [keys0, values0] = [keys.slice(), values.slice()];
          const q = randn(B * Hq * D);
          const kNew = randn(B * row);
          const vNew = randn(B * row);
          const d = (Tk: number, rows: number): AttentionDims => ({
            B: rows,
            Tq: 1,
            Tk,
            Hq,
            Hkv,
            D,
            causal: true,
            ...extra,
          });
          const got = new Float32Array(B * Hq * D);
          k.attentionRowsForward!(got, q, kNew, vNew, keys, values, at, d(0, B));
          // the pool: each row's new k, v at its cache's end, nothing else changed
          const wantKeys = keys0.slice();
          const wantValues = values0.slice();
          lengths.forEach((t, b) => {
            wantKeys.set(kNew.subarray(b * row, (b + 1) * row), (at[2 * b]! + t) * row);
            wantValues.set(vNew.subarray(b * row, (b + 1) * row), (at[2 * b]! + t) * row);
          });
          assert.ok(
            keys.every((v, j) => Object.is(v, wantKeys[j])),
            `${name}: the pool's keys`,
          );
          assert.ok(
            values.every((v, j) => Object.is(v, wantValues[j])),
            `${name}: the pool's values`,
          );
          lengths.forEach((t, b) => {
            const n = Hq * D;
            const want = new Float32Array(n);
            const cache = [at[2 * b]! * row, (at[2 * b]! + t + 1) * row] as const;
            k.attentionForward(
              want,
              new Float32Array(Hq * (t + 1)),
              q.subarray(b * n, (b + 1) * n),
              wantKeys.subarray(...cache),
              wantValues.subarray(...cache),
              d(t + 1, 1),
            );
            const got_b = got.subarray(b * n, (b + 1) * n);
            assert.ok(
              got_b.every((v, j) => Object.is(v, want[j])),
              `${name}: row ${b} (${t + 1} keys) differs from the row alone`,
            );
          });
        });
    it("refuses a row whose cache or new position lies outside the pool", () => {
      const [Hq, Hkv, D] = [4, 2, 8];
      const row = Hkv * D;
      const d: AttentionDims = { B: 2, Tq: 1, Tk: 0, Hq, Hkv, D, causal: true };
      const call = (at: number[]) =>
        k.attentionRowsForward!(
          new Float32Array(2 * Hq * D),
          new Float32Array(2 * Hq * D),
          new Float32Array(2 * row),
          new Float32Array(2 * row),
          new Float32Array(10 * row),
          new Float32Array(10 * row),
          Int32Array.from(at),
          d,
        );
      call([0, 4, 5, 4]); // the last position of the pool: fits
      for (const bad of [
        [0, 4, 5, 5],
        [-1, 2, 0, 0],
        [0, -1, 0, 0],
        [0, 2],
      ])
        assert.throws(() => call(bad), /outside the pool|inconsistent sizes/, `${bad}`);
    });
  });
}

for (const name of availableBackends()) {
  const k = setBackend(name);
  describe(`element-wise activations on ${name}`, () => {
    for (const op of ["siluForward", "geluForward"] as const)
      it(`${op}: each row of a batch equals that row alone`, () => {
        const [R, C] = [11, 300];
        for (let trial = 0; trial < 40; trial++) {
          const x = Float32Array.from({ length: R * C }, () => 6 * rng.normal());
          const all = new Float32Array(R * C);
          k[op](all, x);
          for (let r = 0; r < R; r++) {
            const alone = new Float32Array(C);
            k[op](alone, x.subarray(r * C, (r + 1) * C));
            const bad = alone.findIndex((v, j) => !Object.is(v, all[r * C + j]));
            assert.equal(bad, -1, `${name} ${op}: row ${r}, element ${bad} differs from the row alone`);
          }
        }
      });
  });
}

for (const name of availableBackends()) {
  const k = setBackend(name);
  describe(`ropeRows on ${name}`, { skip: !k.ropeRows && `${name} has none` }, () => {
    it("each row equals rope of that row alone at its position (full and partial rotary, a scale)", () => {
      const [H, D] = [3, 10];
      const offsets = [0, 7, 1, 300, 7, 65535];
      const B = offsets.length;
      for (const [R, scale] of [
        [D, 1],
        [6, 1.25], // partial rotary: dims 6..9 pass through; LongRoPE's factor
      ] as const) {
        const freqs = Float64Array.from({ length: R / 2 }, (_, i) => 10000 ** (-(2 * i) / R));
        const x = randn(B * H * D);
        const got = new Float32Array(B * H * D);
        k.ropeRows!(got, x, B, H, D, offsets, freqs, scale);
        const n = H * D;
        offsets.forEach((pos, b) => {
          const want = new Float32Array(n);
          k.rope(want, x.subarray(b * n, (b + 1) * n), 1, 1, H, D, pos, freqs, scale, false);
          const row = got.subarray(b * n, (b + 1) * n);
          assert.ok(
            row.every((v, j) => Object.is(v, want[j])),
            `${name}: row ${b} (position ${pos}, R ${R}) differs from the row alone`,
          );
        });
      }
    });
  });
}

for (const name of availableBackends()) {
  const k = setBackend(name);
  describe(`loraRowsForward on ${name}`, { skip: !k.loraRowsForward && `${name} has none` }, () => {
    // outF 1003: enough work that native splits the up-projections between threads, by columns, with a
    // tail; in 12: a layer narrower than the small-k panels (native packs A and gathers its rows)
    for (const [inF, outF] of [
      [40, 72],
      [40, 1003],
      [12, 72],
    ] as const)
      it(`equals the per-kernel path (matmul, scale, matmul, add) bit for bit, in and out of batch-invariant mode, ranks on both sides of the small-k panels (in ${inF}, out ${outF})`, () => {
        setBackend(name);
        const N = 13;
        const x = new Tensor(randn(N * inF), [N, inF]);
        const y = new Tensor(randn(N * outF), [N, outF]);
        const groups = [
          { rows: [0, 3, 4, 5, 6, 7, 8, 9, 10, 12], r: 8, scaling: 2 },
          { rows: [1], r: 4, scaling: 0.3 },
          { rows: [11, 2], r: 16, scaling: 1.5 },
          { rows: [3, 9, 1], r: 40, scaling: 0.7 }, // over DOTS_SMALL_K (native/src/gemm.h): plain dots
          { rows: [12], r: 1, scaling: 4 },
        ].map((g) => ({
          rows: g.rows,
          scaling: g.scaling,
          A: new Tensor(randn(g.r * inF), [g.r, inF]),
          B: new Tensor(randn(outF * g.r), [outF, g.r]),
        }));
        // loraRows adds into its y: each call gets its own copy
        for (const run of [(f: () => Tensor) => f(), batchInvariant]) {
          const fast = run(() => loraRows(y.toFloat32(), x, groups));
          const slow = run(() => loraRows(y.toFloat32(), x, groups, true));
          assert.ok(
            fast.data.every((v, j) => Object.is(v, slow.data[j])),
            `${name}: loraRowsForward differs from the per-kernel path`,
          );
          assert.ok(fast.data.some((v, j) => v !== y.data[j]));
        }
        // the same weights again on other rows and with other scalings (a batch that changed, an adapter
        // loaded again with another alpha): the kernel's kept weights follow
        const again = groups.map((g, i) => ({
          ...g,
          rows: g.rows.map((r) => (r + 5 + i) % N),
          scaling: i % 2 ? g.scaling : -g.scaling / 3,
        }));
        const fast = batchInvariant(() => loraRows(y.toFloat32(), x, again));
        const slow = batchInvariant(() => loraRows(y.toFloat32(), x, again, true));
        assert.ok(
          fast.data.every((v, j) => Object.is(v, slow.data[j])),
          `${name}: loraRowsForward on new rows and scalings differs from the per-kernel path`,
        );
      });
  });
}

for (const name of availableBackends()) {
  const k = setBackend(name);
  describe(`linearRowsForward on ${name}`, { skip: !k.linearRowsForward && `${name} has none` }, () => {
    it("equals matmul then loraRows bit for bit: f32, bf16 and f16 weights, rows over the invariant chunk", () => {
      setBackend(name);
      for (const [N, inF, outF] of [
        [16, 64, 172],
        [MAX_ROWS + 3, 40, 37], // past invariantRows: the product in chunks
        [5, 12, 8],
      ] as const) {
        const x = new Tensor(randn(N * inF), [N, inF]);
        const groups = [
          { rows: [0, 3, 4], r: 8 },
          { rows: [1, N - 1], r: 4 },
          { rows: [2], r: 20 },
        ].map((g, i) => ({
          rows: g.rows,
          scaling: 0.5 + i,
          A: new Tensor(randn(g.r * inF), [g.r, inF]),
          B: new Tensor(randn(outF * g.r), [outF, g.r]),
        }));
        const w32 = new Tensor(randn(outF * inF), [outF, inF]);
        for (const w of [w32, w32.toHalf("bf16"), w32.toHalf("f16")]) {
          const fused = batchInvariant(() => linearRows(x, w, groups));
          const apart = batchInvariant(() => linearRows(x, w, groups, true));
          assert.deepEqual(fused.shape, [N, outF]);
          assert.ok(
            fused.data.every((v, j) => Object.is(v, apart.data[j])),
            `${name}: linearRowsForward (${w.dtype}, ${N} x ${inF} -> ${outF}) differs from matmul then loraRows`,
          );
        }
      }
    });

    it("keeps a plan's rows apart from each layer's weights: one frozen rows array for layers of every size, weights lists made anew", () => {
      setBackend(name);
      // a batch plan's rows (packRows: frozen, as MultiLoRALinear passes them to every layer) with the
      // weights of three layers of other sizes, each list made twice (a plan made again)
      const N = 9;
      const rows = packRows([[0, 4, 8], [2], [5, 1]], N);
      for (const [inF, outF] of [
        [64, 172],
        [172, 64],
        [64, 32],
      ] as const)
        for (let again = 0; again < 2; again++) {
          const x = new Tensor(randn(N * inF), [N, inF]);
          const w = new Tensor(randn(outF * inF), [outF, inF]);
          const ab = [4, 8, 2].map((r) => [
            new Tensor(randn(r * inF), [r, inF]),
            new Tensor(randn(outF * r), [outF, r]),
          ]);
          const weights = Object.freeze(ab.map(([A, B], g) => rowWeights(A!, B!, 1 + g, inF, outF)));
          const fused = batchInvariant(() => linearRows(x, w, { inF, outF, N, weights, rows }));
          const plain = ab.map(([A, B], g) => ({ rows: [...rows[g]!], A: A!, B: B!, scaling: 1 + g }));
          const apart = batchInvariant(() => linearRows(x, w, plain, true));
          assert.ok(
            fused.data.every((v, j) => Object.is(v, apart.data[j])),
            `${name}: shared rows with the weights of ${inF} -> ${outF} (list ${again}) differ from matmul then loraRows`,
          );
        }
    });

    it("refuses rows outside the batch, naming them", () => {
      setBackend(name);
      const x = new Tensor(randn(4 * 16), [4, 16]);
      const w = new Tensor(randn(8 * 16), [8, 16]);
      const A = new Tensor(randn(2 * 16), [2, 16]);
      const B = new Tensor(randn(8 * 2), [8, 2]);
      assert.throws(
        () => batchInvariant(() => linearRows(x, w, [{ rows: [4], A, B, scaling: 1 }])),
        /row 4 is outside 0\.\.3/,
      );
    });
  });
}
