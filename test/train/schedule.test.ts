/** Tests for the learning-rate schedules (transformers' get_*_schedule_with_warmup conventions). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { learningRate, SCHEDULES, type ScheduleKind } from "../../src/train/schedule.js";

const BASE = 2e-3;
const TOTAL = 100;

/** Equal up to float64 rounding (the schedule and the expectation may order operations differently). */
function near(got: number, want: number, label: string): void {
  assert.ok(Math.abs(got - want) <= 1e-12 * Math.abs(want) + 1e-18, `${label}: got ${got}, want ${want}`);
}

function lr(kind: ScheduleKind, step: number, warmup: number, minLr?: number): number {
  return learningRate(kind, {
    base: BASE,
    step,
    total: TOTAL,
    warmup,
    ...(minLr === undefined ? {} : { minLr }),
  });
}

const cosineFactor = (progress: number) => 0.5 * (1 + Math.cos(Math.PI * progress));

test("SCHEDULES lists every kind", () => {
  assert.deepEqual([...SCHEDULES], ["constant", "linear", "cosine"]);
});

test("with warmup: 0 at step 0, linear ramp, then the decay from the full base lr", () => {
  const W = 10;
  // [step, constant, linear, cosine] as factors of BASE, written from the definitions
  const rows: [number, number, number, number][] = [
    [0, 0, 0, 0],
    [1, 0.1, 0.1, 0.1],
    [W - 1, 0.9, 0.9, 0.9],
    [W, 1, 1, 1],
    [55, 1, 45 / 90, 0.5],
    [TOTAL - 1, 1, 1 / 90, cosineFactor(89 / 90)],
  ];
  for (const [step, ...factors] of rows) {
    SCHEDULES.forEach((kind, i) => {
      near(lr(kind, step, W), BASE * factors[i]!, `${kind} step ${step}`);
    });
  }
  // the mid cosine value is exactly half way
  assert.equal(lr("cosine", 55, W), BASE * 0.5);
});

test("without warmup: the first step runs at the full base lr", () => {
  const rows: [number, number, number, number][] = [
    [0, 1, 1, 1],
    [1, 1, 99 / 100, cosineFactor(1 / 100)],
    [50, 1, 0.5, 0.5],
    [TOTAL - 1, 1, 1 / 100, cosineFactor(99 / 100)],
  ];
  for (const [step, ...factors] of rows) {
    SCHEDULES.forEach((kind, i) => {
      near(lr(kind, step, 0), BASE * factors[i]!, `${kind} step ${step}`);
    });
  }
  for (const kind of SCHEDULES) assert.equal(lr(kind, 0, 0), BASE);
});

test("linear and cosine decrease monotonically after warmup and stay >= 0; warmup == total is all warmup", () => {
  for (const kind of ["linear", "cosine"] as const) {
    let prev = Number.POSITIVE_INFINITY;
    for (let step = 5; step < TOTAL; step++) {
      const v = lr(kind, step, 5);
      assert.ok(v <= prev && v > 0, `${kind} step ${step}: ${v} after ${prev}`);
      prev = v;
    }
    // past the end: linear reaches 0, cosine stays at its end value 0
    assert.equal(lr(kind, TOTAL, 5), 0);
    assert.equal(lr(kind, TOTAL + 20, 5), 0);
  }
  for (const kind of SCHEDULES) {
    near(learningRate(kind, { base: 1, step: 3, total: 4, warmup: 4 }), 0.75, `${kind} all warmup`);
  }
  // a one-step run with no warmup
  for (const kind of SCHEDULES)
    assert.equal(learningRate(kind, { base: 1, step: 0, total: 1, warmup: 0 }), 1);
});

test("minLr floors the decay after warmup, not the warmup ramp", () => {
  const minLr = 5e-4;
  assert.equal(lr("linear", 0, 10, minLr), 0);
  near(lr("linear", 5, 10, minLr), BASE * 0.5, "linear in warmup");
  assert.equal(lr("linear", TOTAL - 1, 10, minLr), minLr);
  assert.equal(lr("cosine", TOTAL - 1, 10, minLr), minLr);
  assert.equal(lr("cosine", TOTAL, 10, minLr), minLr);
  near(lr("cosine", 55, 10, minLr), BASE * 0.5, "cosine mid (above the floor)");
  assert.equal(lr("constant", 50, 10, minLr), BASE);
  assert.equal(lr("linear", 50, 0, BASE), BASE); // a floor at base makes it constant after warmup
});

test("invalid inputs are clear errors naming the value", () => {
  const ok = { base: 1e-3, step: 0, total: 10, warmup: 2 };
  const bad: [Partial<typeof ok> & { minLr?: number }, RegExp][] = [
    [{ base: 0 }, /base lr must be a finite number > 0, got 0/],
    [{ base: -1e-3 }, /base lr must be a finite number > 0, got -0.001/],
    [{ base: Number.NaN }, /base lr .*got NaN/],
    [{ warmup: -1 }, /warmup steps must be an integer >= 0, got -1/],
    [{ warmup: 11 }, /warmup steps \(11\) exceed total steps \(10\)/],
    [{ warmup: 1.5 }, /warmup steps must be an integer >= 0, got 1.5/],
    [{ total: 0, warmup: 0 }, /total steps must be an integer >= 1, got 0/],
    [{ step: -1 }, /step must be an integer >= 0, got -1/],
    [{ step: 0.5 }, /step must be an integer >= 0, got 0.5/],
    [{ minLr: -1 }, /minLr must be a finite number >= 0, got -1/],
    [{ minLr: 0.1 }, /minLr \(0.1\) exceeds the base lr \(0.001\)/],
  ];
  for (const [change, message] of bad) {
    for (const kind of SCHEDULES) {
      assert.throws(() => learningRate(kind, { ...ok, ...change }), message, JSON.stringify(change));
    }
  }
  assert.throws(
    () => learningRate("step" as ScheduleKind, ok),
    /unknown schedule "step"; available: constant, linear, cosine/,
  );
});
