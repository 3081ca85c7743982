/**
 * The scheduler's bookkeeping of a sequence's state (serve/scheduler.ts): `end` runs exactly once for
 * every started sequence, whichever way it leaves (finished, its client gone, a failed step, its own
 * onToken throwing), never for one whose `start` threw, and a throwing onEnd stops neither the loop nor
 * the other sequences.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type DecodeStep, Scheduler, type SequenceSpec } from "../../src/serve/scheduler.js";

interface State {
  id: number;
  ended: number;
}

function harness(opts: { failAt?: number; startThrows?: (n: number) => boolean } = {}) {
  const states: State[] = [];
  let steps = 0;
  const decode: DecodeStep<State> = {
    start() {
      const n = states.length;
      if (opts.startThrows?.(n)) throw new Error(`start ${n} failed`);
      const s = { id: n, ended: 0 };
      states.push(s);
      return s;
    },
    step(batch) {
      steps++;
      if (opts.failAt === steps) throw new Error("the step failed");
      return batch.map(() => 7);
    },
    end(s) {
      s.ended++;
    },
  };
  const scheduler = new Scheduler(decode, { maxBatch: 8, maxQueue: 8 });
  return { scheduler, states };
}

/** A spec that takes `tokens` tokens, recording how it ended. */
function spec(tokens: number, ends: (Error | undefined)[], extra: Partial<SequenceSpec> = {}): SequenceSpec {
  let n = 0;
  return {
    adapter: null,
    prompt: [1],
    sampling: { maxTokens: tokens, temperature: 0 },
    onToken: () => ++n < tokens,
    onEnd: (e) => ends.push(e),
    ...extra,
  };
}

describe("scheduler: a sequence's state is freed once, whichever way it leaves", () => {
  it("finished sequences free their state once; one whose start threw has none to free", async () => {
    const { scheduler, states } = harness({ startThrows: (n) => n === 2 });
    const ends: (Error | undefined)[] = [];
    scheduler.submit([spec(3, ends), spec(5, ends)]);
    scheduler.submit([spec(2, ends)]); // the third start: it throws
    await scheduler.drain();
    assert.equal(ends.length, 3);
    assert.equal(ends.filter((e) => e === undefined).length, 2, "two finished");
    assert.ok(
      ends.some((e) => e?.message === "start 2 failed"),
      "the failed start is told why",
    );
    assert.deepEqual(
      states.map((s) => s.ended),
      [1, 1],
      "each started sequence freed once; none for the one that failed to start",
    );
  });

  it("an onToken that throws frees its state once", async () => {
    const { scheduler, states } = harness();
    const ends: (Error | undefined)[] = [];
    const boom = new Error("onToken failed");
    scheduler.submit([
      spec(2, ends, {
        onToken: () => {
          throw boom;
        },
      }),
      spec(4, ends),
    ]);
    await scheduler.drain();
    assert.deepEqual(ends, [boom, undefined]);
    assert.deepEqual(
      states.map((s) => s.ended),
      [1, 1],
    );
  });

  it("a failed step frees every sequence of its batch", async () => {
    const { scheduler, states } = harness({ failAt: 2 });
    const ends: (Error | undefined)[] = [];
    scheduler.submit([spec(10, ends), spec(10, ends), spec(10, ends)]);
    await scheduler.drain();
    assert.equal(ends.length, 3);
    assert.ok(ends.every((e) => e?.message === "the step failed"));
    assert.deepEqual(
      states.map((s) => s.ended),
      [1, 1, 1],
    );
  });

  it("a client that goes away frees its sequence between steps", async () => {
    const { scheduler, states } = harness();
    const ends: (Error | undefined)[] = [];
    const ctl = new AbortController();
    let n = 0;
    scheduler.submit(
      [
        spec(100, ends, {
          onToken: () => {
            if (++n === 3) ctl.abort();
            return true;
          },
        }),
      ],
      ctl.signal,
    );
    scheduler.submit([spec(5, ends)]);
    await scheduler.drain();
    assert.equal(ends.length, 2);
    assert.ok(ends.some((e) => /disconnected/.test(e?.message ?? "")));
    assert.deepEqual(
      states.map((s) => s.ended),
      [1, 1],
    );
  });

  it("a throwing onEnd stops neither the loop nor the other sequences", async () => {
    const { scheduler, states } = harness();
    const ends: (Error | undefined)[] = [];
    scheduler.submit([
      spec(2, ends, {
        onEnd: () => {
          throw new Error("the request's own bug");
        },
      }),
      spec(6, ends),
    ]);
    await scheduler.drain();
    assert.deepEqual(ends, [undefined], "the other sequence finished");
    assert.deepEqual(
      states.map((s) => s.ended),
      [1, 1],
    );
  });
});
