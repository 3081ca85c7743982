/** The KV cache: what append returns, across the buffer's growth, and that views handed out never change. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { KVCache } from "../../src/nn/kv-cache.js";
import { Tensor } from "../../src/tensor/tensor.js";

const [H, D] = [2, 3];
/** Step t's k (v = -k) for B rows and T positions: every value names its row, position and element. */
const step = (B: number, t0: number, T: number) =>
  new Tensor(
    Float32Array.from({ length: B * T * H * D }, (_, i) => {
      const b = Math.floor(i / (T * H * D));
      const p = t0 + Math.floor((i % (T * H * D)) / (H * D));
      return b * 1000 + p + (i % (H * D)) / 10;
    }),
    [B, T, H, D],
  );
const neg = (t: Tensor) =>
  new Tensor(
    t.data.map((x) => -x),
    t.shape,
  );

describe("KVCache", () => {
  for (const B of [1, 2])
    it(`returns every position so far through the buffer's growth, and earlier results stay as they were (B ${B})`, () => {
      const cache = new KVCache();
      const seen: { k: Tensor; len: number }[] = [];
      let len = 0;
      for (const T of [5, 1, 1, 20, 1, 13, 1, 40]) {
        const k = step(B, len, T);
        const [ks, vs] = cache.append(0, k, neg(k));
        cache.commit();
        len += T;
        assert.deepEqual(ks.shape, [B, len, H, D]);
        assert.deepEqual(
          vs.data,
          ks.data.map((x) => -x),
        );
        assert.deepEqual(ks.data, step(B, 0, len).data);
        seen.push({ k: ks, len });
      }
      for (const { k, len } of seen) assert.deepEqual(k.data, step(B, 0, len).data);
    });

  it("a step appended again before commit replaces it without changing what the first append returned", () => {
    const cache = new KVCache();
    cache.append(0, step(1, 0, 4), step(1, 0, 4));
    cache.commit();
    const [first] = cache.append(0, step(1, 4, 1), step(1, 4, 1));
    const before = first.data.slice();
    const other = new Tensor(new Float32Array(H * D).fill(7), [1, 1, H, D]);
    const [again] = cache.append(0, other, other);
    cache.commit();
    assert.deepEqual(first.data, before);
    assert.deepEqual(again.data.subarray(4 * H * D), other.data);
    assert.equal(cache.length, 5);
  });

  it("refuses a layer's k or v of another shape than it holds", () => {
    const cache = new KVCache();
    cache.append(0, step(1, 0, 2), step(1, 0, 2));
    cache.commit();
    assert.throws(() => cache.append(0, step(2, 2, 1), step(2, 2, 1)), /holds another shape/);
    const k = step(1, 2, 1);
    assert.throws(
      () => cache.append(0, k, new Tensor(new Float32Array(2 * D), [1, 1, 1, 2 * D])),
      /another shape/,
    );
  });
});
