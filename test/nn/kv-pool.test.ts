/**
 * KVPool (nn/kv-pool.ts) and KVCache in a pool: regions first-fit and merged when released, a grown pool
 * keeps every region's values where they were, a region released twice (or never given) is refused, and
 * a pooled cache hands out what a cache on its own does, over growth, moves and a second append before
 * commit, then gives its region back.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { KVCache } from "../../src/nn/kv-cache.js";
import { KVPool } from "../../src/nn/kv-pool.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";

describe("KVPool", () => {
  it("gives regions first-fit, merges released neighbours, and refuses a region not in use", () => {
    const pool = new KVPool();
    const a = pool.allocate(10);
    const b = pool.allocate(20);
    const c = pool.allocate(5);
    assert.deepEqual([a, b, c], [0, 10, 30]);
    assert.equal(pool.positions, 64);
    assert.equal(pool.inUse, 35);
    pool.release(b, 20);
    assert.equal(pool.allocate(15), 10, "first fit: the hole b left");
    pool.release(10, 15);
    pool.release(a, 10);
    assert.equal(pool.allocate(30), 0, "a and b's holes merged into one region");
    pool.release(0, 30);
    assert.throws(() => pool.release(0, 30), /not a region in use/, "released twice");
    assert.throws(() => pool.release(60, 10), /not a region in use/);
    assert.throws(() => pool.allocate(0), /cannot allocate/);
  });

  it("grows at need and keeps each region's values at its offset", () => {
    const pool = new KVPool();
    const row = 3;
    const a = pool.allocate(40);
    const { keys } = pool.layer(0, row);
    keys.fill(7, a * row, (a + 40) * row);
    const b = pool.allocate(100); // past 64 positions: the pool grows
    assert.ok(pool.positions >= 140);
    assert.equal(b, 40);
    const after = pool.layer(0, row);
    assert.notEqual(after.keys, keys, "new arrays");
    assert.ok(after.keys.subarray(0, 40 * row).every((v) => v === 7));
    assert.equal(after.keys.length, pool.positions * row);
    assert.equal(
      pool.layer(1, 5).values.length,
      pool.positions * 5,
      "a layer first used late has the pool's size",
    );
    assert.throws(() => pool.layer(0, 4), /one pool per model/);
  });
});

describe("KVCache in a pool", () => {
  it("hands out what a cache on its own does, over growth and moves, and gives its region back", () => {
    const rng = new Rng(3);
    const pool = new KVPool();
    const [H, D] = [2, 3];
    const other = new KVCache({ pool, expect: 4 }); // a neighbour, so moves have somewhere to go
    const pooled = new KVCache({ pool, expect: 4 });
    const alone = new KVCache();
    for (const T of [3, 1, 1, 5, 1, 20, 1]) {
      other.appendValues(0, new Float32Array(H * D * T), new Float32Array(H * D * T), 1, T, H, D);
      other.commit();
      for (const layer of [0, 1]) {
        const k = Tensor.randn([1, T, H, D], rng);
        const v = Tensor.randn([1, T, H, D], rng);
        const [wk, wv] = alone.append(layer, k, v);
        // appended twice before commit (as a retried step): the second one is what counts
        pooled.append(layer, Tensor.randn([1, T, H, D], rng), Tensor.randn([1, T, H, D], rng));
        const [gk, gv] = pooled.append(layer, k, v);
        assert.deepEqual(gk.shape, wk.shape);
        assert.deepEqual([...gk.data], [...wk.data]);
        assert.deepEqual([...gv.data], [...wv.data]);
      }
      alone.commit();
      pooled.commit();
      assert.equal(pooled.length, alone.length);
    }
    assert.throws(
      () => pooled.appendValues(0, new Float32Array(12), new Float32Array(12), 2, 1, H, D),
      /one sequence \(B 1\)/,
    );
    pooled.release();
    other.release();
    assert.equal(pool.inUse, 0);
    assert.equal(pooled.length, 0);
  });

  it("takes its expected length at once, doubles past it, and is reusable after a release (twice is a no-op)", () => {
    const pool = new KVPool();
    const [H, D] = [1, 2];
    const step = (c: KVCache, T: number) => {
      c.appendValues(0, new Float32Array(T * H * D), new Float32Array(T * H * D), 1, T, H, D);
      c.commit();
    };
    const c = new KVCache({ pool, expect: 10 });
    step(c, 4);
    assert.equal(pool.inUse, 10, "the expected length, not the need");
    for (let i = 0; i < 6; i++) step(c, 1);
    assert.equal(pool.inUse, 10, "no move while within it");
    step(c, 1); // 11 positions: past the expected length, doubled (at least 256 past the need)
    const grown = pool.inUse;
    assert.ok(grown >= 11 + 256, `${grown} positions`);
    for (let i = 0; i < 40; i++) step(c, 1);
    assert.equal(pool.inUse, grown, "one move for many steps past the expected length");
    c.release();
    c.release();
    assert.equal(pool.inUse, 0);
    step(c, 3); // a released cache starts again, empty
    assert.equal(c.length, 3);
    assert.equal(pool.inUse, 10);
    c.release();
  });
});
