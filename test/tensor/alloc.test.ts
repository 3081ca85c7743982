/**
 * tensor/alloc.ts: op outputs are zeroed wherever they come from; inside `scratch` they come from one
 * arena that the next scope reuses (so an output kept past its scope sees the next scope's values, which
 * is why only steps that keep nothing run in one); with the checks on, a kept output reads NaN instead.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { floats, scratch, setScratchChecks } from "../../src/tensor/alloc.js";

describe("scratch", () => {
  after(() => setScratchChecks(false));

  it("hands out zeroed buffers, from one arena reused by the next scope", () => {
    // the first scope sizes the arena; later ones take from it
    scratch(() => floats(1000));
    const first = scratch(() => {
      const a = floats(1000);
      assert.ok(a.every((v) => v === 0));
      a.fill(7);
      return a;
    });
    const second = scratch(() => {
      const b = floats(1000);
      assert.ok(
        b.every((v) => v === 0),
        "a reused buffer is zeroed again",
      );
      b.fill(3);
      return b;
    });
    assert.equal(first.buffer, second.buffer, "the arena is reused");
    assert.equal(first[0], 3, "an output kept past its scope sees the next scope's values");
  });

  it("keeps every buffer of a scope apart and on a 64-byte boundary; more than the arena falls back", () => {
    scratch(() => floats(10_000));
    scratch(() => {
      const xs = [floats(3), floats(100), floats(17), floats(20_000)];
      for (const [i, x] of xs.entries()) {
        x.fill(i + 1);
        if (i < 3) assert.equal(x.byteOffset % 64, 0);
      }
      xs.forEach((x, i) =>
        assert.ok(
          x.every((v) => v === i + 1),
          `buffer ${i} was overwritten`,
        ),
      );
      // nested: the outer scope's arena
      const inner = scratch(() => floats(5));
      assert.equal(inner.buffer, xs[0]!.buffer);
    });
    // outside a scope: never the arena
    const outside = floats(100);
    const inside = scratch(() => floats(100));
    assert.notEqual(outside.buffer, inside.buffer);
  });

  it("with the checks on, an output kept past its scope reads NaN", () => {
    setScratchChecks(true);
    const kept = scratch(() => floats(64).fill(1));
    assert.ok(kept.every(Number.isNaN));
    const next = scratch(() => {
      const b = floats(64);
      assert.ok(b.every((v) => v === 0));
      return b;
    });
    assert.notEqual(next.buffer, kept.buffer, "each scope gets a new arena");
    assert.ok(kept.every(Number.isNaN) && next.every(Number.isNaN));
    setScratchChecks(false);
  });
});
