/** Tests for the optimizers (SGD, Adam, AdamW), their state dicts, and gradient-norm clipping. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";
import {
  clipGradNorm,
  createOptimizer,
  OPTIMIZERS,
  type OptimizerKind,
  type OptimizerOptions,
  type OptimizerState,
} from "../../src/train/optim.js";
import { assertClose, fixturesDir } from "../helpers.js";

type Named = [string, Tensor][];

/** Two trainable params and one frozen one, drawn from a fixed seed. */
function makeParams(seed = 1): { named: Named; frozen: Tensor } {
  const rng = new Rng(seed);
  const a = Tensor.randn([3, 4], rng, 1, true);
  const b = Tensor.randn([5], rng, 1, true);
  const frozen = Tensor.randn([2, 2], rng, 1, false);
  return {
    named: [
      ["a", a],
      ["frozen", frozen],
      ["b", b],
    ],
    frozen,
  };
}

/** Gradients for `steps` steps (f32 values), one array per parameter. */
function makeGrads(named: Named, steps: number, seed = 7): Float32Array[][] {
  const rng = new Rng(seed);
  return Array.from({ length: steps }, () =>
    named.map(([, p]) => {
      const g = new Float32Array(p.size);
      for (let i = 0; i < g.length; i++) g[i] = rng.normal() * 0.1;
      return g;
    }),
  );
}

function setGrads(named: Named, grads: Float32Array[]): void {
  named.forEach(([, p], i) => {
    p.grad = grads[i]!.slice();
  });
}

const LR_SCALE = [1, 0.5, 0.25];

// ---------------------------------------------------------------------------------------------
// Independent float64 versions of the update rules (torch semantics)
// ---------------------------------------------------------------------------------------------

function sgdRef(p0: number[], grads: number[][], lrs: number[], momentum: number, wd: number): number[][] {
  const p = [...p0];
  let buf: number[] | null = null;
  const out: number[][] = [];
  grads.forEach((g0, k) => {
    const g = g0.map((g, i) => g + wd * p[i]!);
    let d = g;
    if (momentum > 0) {
      buf = buf === null ? [...g] : buf.map((b, i) => momentum * b + g[i]!);
      d = buf;
    }
    for (let i = 0; i < p.length; i++) p[i] = p[i]! - lrs[k]! * d[i]!;
    out.push([...p]);
  });
  return out;
}

function adamRef(
  decoupled: boolean,
  p0: number[],
  grads: number[][],
  lrs: number[],
  o: { beta1: number; beta2: number; eps: number; wd: number },
): number[][] {
  const p = [...p0];
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  const out: number[][] = [];
  grads.forEach((g0, k) => {
    const t = k + 1;
    const lr = lrs[k]!;
    for (let i = 0; i < p.length; i++) {
      let g = g0[i]!;
      if (decoupled) p[i] = p[i]! * (1 - lr * o.wd);
      else g += o.wd * p[i]!;
      m[i] = o.beta1 * m[i]! + (1 - o.beta1) * g;
      v[i] = o.beta2 * v[i]! + (1 - o.beta2) * g * g;
      const mhat = m[i]! / (1 - o.beta1 ** t);
      const vhat = v[i]! / (1 - o.beta2 ** t);
      p[i] = p[i]! - (lr * mhat) / (Math.sqrt(vhat) + o.eps);
    }
    out.push([...p]);
  });
  return out;
}

/** Runs `steps` steps with lr = opts.lr * LR_SCALE[k]; returns each trainable param after each step. */
function runSteps(
  kind: OptimizerKind,
  named: Named,
  grads: Float32Array[][],
  opts: OptimizerOptions,
): Float32Array[][] {
  const opt = createOptimizer(kind, named, opts);
  const out: Float32Array[][] = [];
  grads.forEach((g, k) => {
    setGrads(named, g);
    opt.lr = opts.lr * LR_SCALE[k]!;
    opt.step();
    out.push(named.map(([, p]) => p.data.slice()));
  });
  return out;
}

// ---------------------------------------------------------------------------------------------

test("createOptimizer: every kind is available; no trainable parameter is a clear error", () => {
  assert.deepEqual([...OPTIMIZERS], ["sgd", "adam", "adamw"]);
  const frozen = Tensor.zeros([3]);
  for (const kind of OPTIMIZERS) {
    assert.throws(() => createOptimizer(kind, [["w", frozen]], { lr: 0.1 }), {
      message: "no trainable parameters: did you apply LoRA or unfreeze the model?",
    });
    assert.throws(() => createOptimizer(kind, [], { lr: 0.1 }), /no trainable parameters/);
  }
  const w = Tensor.zeros([3], true);
  assert.throws(
    () => createOptimizer("sgd", [["w", w]], { lr: -1 }),
    /lr must be a finite number >= 0, got -1/,
  );
  assert.throws(() => createOptimizer("sgd", [["w", w]], { lr: Number.NaN }), /lr must be .*got NaN/);
  assert.throws(
    () => createOptimizer("adam", [["w", w]], { lr: 1, beta2: 1 }),
    /beta2 must be in \[0, 1\), got 1/,
  );
  assert.throws(() => createOptimizer("adamw", [["w", w]], { lr: 1, weightDecay: -0.1 }), /weightDecay/);
  assert.throws(() => createOptimizer("sgd", [["w", w]], { lr: 1, momentum: -0.5 }), /momentum/);
  assert.throws(
    () =>
      createOptimizer(
        "sgd",
        [
          ["w", w],
          ["w", Tensor.zeros([1], true)],
        ],
        { lr: 1 },
      ),
    /parameter name "w" is given twice/,
  );
  assert.throws(
    () => createOptimizer("nope" as OptimizerKind, [["w", w]], { lr: 1 }),
    /unknown optimizer "nope"/,
  );
  const opt = createOptimizer("sgd", [["w", w]], { lr: 1 });
  opt.lr = Number.POSITIVE_INFINITY;
  assert.throws(() => opt.step(), /lr must be a finite number >= 0, got Infinity/);
});

test("SGD: p -= lr * g is bit-exact, step after step", () => {
  const { named } = makeParams();
  // a larger, small-valued param where rounding lr to f32 first would show
  named.push(["c", Tensor.randn([4096], new Rng(2), 1e-3, true)]);
  const trainable = named.filter(([, p]) => p.requiresGrad);
  const grads = makeGrads(trainable, 3);
  const opt = createOptimizer("sgd", named, { lr: 0.1 });
  const lrs = [0.1, 0.03, 1e-3];
  for (let k = 0; k < 3; k++) {
    const before = trainable.map(([, p]) => p.data.slice());
    setGrads(trainable, grads[k]!);
    opt.lr = lrs[k]!;
    opt.step();
    trainable.forEach(([name, p], j) => {
      const g = grads[k]![j]!;
      for (let i = 0; i < p.size; i++) {
        const want = Math.fround(before[j]![i]! - lrs[k]! * g[i]!);
        assert.ok(Object.is(p.data[i], want), `step ${k} ${name}[${i}]: ${p.data[i]} !== ${want}`);
      }
    });
  }
  assert.equal(opt.steps, 3);
  assert.deepEqual(opt.stateDict().buffers, { a: {}, b: {}, c: {} });
});

test("SGD with momentum and weight decay matches a float64 hand computation over 3 steps", () => {
  const { named } = makeParams(3);
  const trainable = named.filter(([, p]) => p.requiresGrad);
  const grads = makeGrads(trainable, 3, 11);
  const p0 = trainable.map(([, p]) => Array.from(p.data));
  const opts = { lr: 0.1, momentum: 0.9, weightDecay: 0.05 };
  const got = runSteps("sgd", trainable, grads, opts);
  const lrs = LR_SCALE.map((s) => opts.lr * s);
  trainable.forEach(([name], j) => {
    const want = sgdRef(
      p0[j]!,
      grads.map((g) => Array.from(g[j]!)),
      lrs,
      opts.momentum,
      opts.weightDecay,
    );
    for (let k = 0; k < 3; k++) assertClose(got[k]![j]!, want[k]!, "f32", `step ${k + 1} ${name}`);
  });
});

for (const kind of ["adam", "adamw"] as const) {
  test(`${kind} matches a float64 hand computation over 3 steps (with weight decay, changing lr)`, () => {
    const { named } = makeParams(5);
    const trainable = named.filter(([, p]) => p.requiresGrad);
    const grads = makeGrads(trainable, 3, 13);
    const p0 = trainable.map(([, p]) => Array.from(p.data));
    const opts = { lr: 0.01, weightDecay: 0.1, beta1: 0.8, beta2: 0.99, eps: 1e-6 };
    const got = runSteps(kind, trainable, grads, opts);
    const lrs = LR_SCALE.map((s) => opts.lr * s);
    trainable.forEach(([name], j) => {
      const want = adamRef(
        kind === "adamw",
        p0[j]!,
        grads.map((g) => Array.from(g[j]!)),
        lrs,
        { beta1: opts.beta1, beta2: opts.beta2, eps: opts.eps, wd: opts.weightDecay },
      );
      for (let k = 0; k < 3; k++) assertClose(got[k]![j]!, want[k]!, "f32", `step ${k + 1} ${name}`);
    });
  });
}

test("defaults follow torch: adamw decays by 0.01, adam and sgd not at all", () => {
  const run = (kind: OptimizerKind, opts: OptimizerOptions) => {
    const { named } = makeParams(9);
    const trainable = named.filter(([, p]) => p.requiresGrad);
    return runSteps(kind, trainable, makeGrads(trainable, 3, 17), opts);
  };
  assert.deepEqual(run("adamw", { lr: 0.01 }), run("adamw", { lr: 0.01, weightDecay: 0.01 }));
  assert.notDeepEqual(run("adamw", { lr: 0.01 }), run("adamw", { lr: 0.01, weightDecay: 0 }));
  assert.deepEqual(
    run("adam", { lr: 0.01 }),
    run("adam", { lr: 0.01, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8 }),
  );
  assert.deepEqual(run("sgd", { lr: 0.01 }), run("sgd", { lr: 0.01, weightDecay: 0, momentum: 0 }));
});

// ---------------------------------------------------------------------------------------------
// Against torch.optim (test/fixtures/optim/optim.json, made by scripts/make_optim_fixtures.py)
// ---------------------------------------------------------------------------------------------

interface OptimFixture {
  shapes: Record<string, number[]>;
  lrScale: number[];
  init: Record<string, number[]>;
  grads: Record<string, number[]>[];
  cases: Record<
    string,
    {
      kind: OptimizerKind;
      opts: OptimizerOptions;
      after: Record<string, number[]>[];
      state: Record<string, Record<string, number[]>>;
    }
  >;
}

const fixture = JSON.parse(readFileSync(join(fixturesDir, "optim/optim.json"), "utf8")) as OptimFixture;

for (const [caseName, c] of Object.entries(fixture.cases)) {
  test(`torch.optim fixture: ${caseName}`, () => {
    const names = Object.keys(fixture.shapes);
    const named: Named = names.map((n) => [n, Tensor.from(fixture.init[n]!, fixture.shapes[n]!, true)]);
    const opt = createOptimizer(c.kind, named, c.opts);
    fixture.grads.forEach((grads, k) => {
      for (const [n, p] of named) p.grad = Float32Array.from(grads[n]!);
      opt.lr = c.opts.lr * fixture.lrScale[k]!;
      opt.step();
      for (const [n, p] of named)
        assertClose(p.data, c.after[k]![n]!, "f32", `${caseName} step ${k + 1} ${n}`);
    });
    const state = opt.stateDict();
    assert.equal(state.kind, c.kind);
    assert.equal(state.step, fixture.grads.length);
    assert.deepEqual(Object.keys(state.buffers).sort(), Object.keys(c.state).sort());
    for (const [n, bufs] of Object.entries(c.state)) {
      assert.deepEqual(
        Object.keys(state.buffers[n]!).sort(),
        Object.keys(bufs).sort(),
        `${caseName} ${n} buffers`,
      );
      for (const [b, want] of Object.entries(bufs)) {
        assertClose(state.buffers[n]![b]!, want, "f32", `${caseName} ${n}.${b}`);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Trainable-only state, skipped params, zeroGrad
// ---------------------------------------------------------------------------------------------

test("state is held only for trainable params; a frozen param never changes", () => {
  for (const kind of OPTIMIZERS) {
    const { named, frozen } = makeParams();
    const frozenBefore = frozen.data.slice();
    frozen.grad = new Float32Array(frozen.size).fill(1); // even a stray grad is not applied
    const opt = createOptimizer(kind, named, { lr: 0.1, momentum: 0.9, weightDecay: 0.1 });
    assert.deepEqual(
      opt.params.map(([n]) => n),
      ["a", "b"],
    );
    const trainable = named.filter(([, p]) => p.requiresGrad);
    for (const g of makeGrads(trainable, 2)) {
      setGrads(trainable, g);
      opt.step();
    }
    assert.deepEqual(frozen.data, frozenBefore, kind);
    const s = opt.stateDict();
    assert.deepEqual(Object.keys(s.buffers), ["a", "b"], kind);
    assert.deepEqual(Object.keys(s.buffers.a!), kind === "sgd" ? ["momentum"] : ["m", "v"], kind);
    // zeroGrad drops only the grads it owns
    opt.zeroGrad();
    assert.equal(named[0]![1].grad, null);
    assert.equal(named[2]![1].grad, null);
    assert.notEqual(frozen.grad, null);
  }
});

test("a param without a grad is skipped (data and buffers unchanged); the step counter is per optimizer", () => {
  for (const kind of OPTIMIZERS) {
    const { named } = makeParams();
    const [[, a], , [, b]] = named as [[string, Tensor], [string, Tensor], [string, Tensor]];
    const opt = createOptimizer(kind, named, { lr: 0.1, momentum: 0.5 });
    a.grad = new Float32Array(a.size).fill(0.5);
    b.grad = new Float32Array(b.size).fill(0.5);
    opt.step();
    const bData = b.data.slice();
    const bState = opt.stateDict().buffers.b!;
    const aData = a.data.slice();
    b.grad = null;
    opt.step();
    assert.deepEqual(b.data, bData, kind);
    assert.deepEqual(opt.stateDict().buffers.b, bState, kind);
    assert.notDeepEqual(a.data, aData, kind);
    assert.equal(opt.steps, 2);
    assert.equal(opt.stateDict().step, 2);
    // a grad of the wrong size is an error naming the param
    b.grad = new Float32Array(2);
    assert.throws(() => opt.step(), /grad of "b" holds 2 values, the parameter 5/);
  }
});

// ---------------------------------------------------------------------------------------------
// stateDict / loadStateDict
// ---------------------------------------------------------------------------------------------

test("stateDict -> loadStateDict resumes bit-identically to an uninterrupted run", () => {
  for (const kind of OPTIMIZERS) {
    const opts = { lr: 0.05, momentum: 0.9, weightDecay: 0.02 };
    const grads = makeGrads(
      makeParams().named.filter(([, p]) => p.requiresGrad),
      6,
      21,
    );
    const lrAt = (k: number) => opts.lr * (1 - k / 6);
    const stepWith = (o: ReturnType<typeof createOptimizer>, k: number) => {
      setGrads(o.params, grads[k]!);
      o.lr = lrAt(k);
      o.step();
    };

    // Uninterrupted.
    const full = createOptimizer(kind, makeParams().named, opts);
    for (let k = 0; k < 6; k++) stepWith(full, k);

    // Three steps, save, then a fresh optimizer on copies of the weights resumes.
    const first = createOptimizer(kind, makeParams().named, opts);
    for (let k = 0; k < 3; k++) stepWith(first, k);
    const saved = first.stateDict();
    const weights: Named = first.params.map(([n, p]) => [n, new Tensor(p.data.slice(), p.shape, true)]);
    const savedCopy = structuredClone(saved);
    stepWith(first, 3); // the saved dict is a copy: later steps do not touch it
    assert.deepEqual(saved, savedCopy);

    const resumed = createOptimizer(kind, weights, { ...opts, lr: 123 });
    resumed.loadStateDict(saved);
    assert.equal(resumed.steps, 3);
    // loading copies: changing the dict afterwards does not reach the optimizer
    for (const bufs of Object.values(saved.buffers)) for (const b of Object.values(bufs)) b.fill(99);
    for (let k = 3; k < 6; k++) stepWith(resumed, k);

    full.params.forEach(([n, p], i) => {
      const r = resumed.params[i]![1];
      assert.equal(resumed.params[i]![0], n);
      assert.ok(
        p.data.every((x, j) => Object.is(x, r.data[j])),
        `${kind} ${n}: resumed run differs from the uninterrupted one`,
      );
    });
    assert.deepEqual(resumed.stateDict(), full.stateDict(), kind);
  }
});

test("loadStateDict lists every missing, extra and mis-sized buffer at once, and changes nothing", () => {
  const { named } = makeParams();
  const opt = createOptimizer("adamw", named, { lr: 0.1 });
  const good = opt.stateDict();
  const bad: OptimizerState = {
    kind: "adam",
    step: 4,
    buffers: {
      a: { m: new Float32Array(12), v: new Float32Array(11), extra: new Float32Array(12) },
      b: { v: new Float32Array(5) },
      frozen: { m: new Float32Array(4), v: new Float32Array(4) },
      ghost: {},
    },
  };
  assert.throws(
    () => opt.loadStateDict(bad),
    (e: Error) => {
      assert.equal(
        e.message,
        [
          "optimizer state does not fit the parameters (6 problems):",
          '  state was saved by optimizer "adam", this one is "adamw"',
          '  buffer "v" of parameter "a" holds 11 values, expected 12',
          '  extra buffer "extra" of parameter "a"',
          '  missing buffer "m" of parameter "b" (5 values)',
          '  extra parameter "frozen" (buffers "m", "v"): not trainable here',
          '  extra parameter "ghost": not trainable here',
        ].join("\n"),
      );
      return true;
    },
  );
  assert.deepEqual(opt.stateDict(), good);
  assert.throws(
    () => opt.loadStateDict({ kind: "adamw", step: -1, buffers: {} }),
    (e: Error) => {
      assert.match(e.message, /\(5 problems\)/);
      assert.match(e.message, /step must be an integer >= 0, got -1/);
      assert.match(e.message, /missing buffer "m" of parameter "a" \(12 values\)/);
      assert.match(e.message, /missing buffer "v" of parameter "b" \(5 values\)/);
      return true;
    },
  );
  // SGD without momentum has no buffers: an empty state fits
  const sgd = createOptimizer("sgd", named, { lr: 0.1 });
  sgd.loadStateDict({ kind: "sgd", step: 7, buffers: {} });
  assert.equal(sgd.steps, 7);
  assert.throws(
    () => sgd.loadStateDict({ kind: "sgd", step: 0, buffers: { a: { momentum: new Float32Array(12) } } }),
    /\(1 problem\):\n {2}extra buffer "momentum" of parameter "a"$/,
  );
});

// ---------------------------------------------------------------------------------------------
// clipGradNorm
// ---------------------------------------------------------------------------------------------

function gradTensor(values: number[]): Tensor {
  const t = Tensor.zeros([values.length], true);
  t.grad = Float32Array.from(values);
  return t;
}

test("clipGradNorm: the float64 norm over all grads; scales by maxNorm / (norm + 1e-6) above maxNorm", () => {
  const x = gradTensor([3, 0, 0]);
  const y = gradTensor([0, 4]);
  const none = Tensor.zeros([2], true); // grad null: counts as nothing
  const norm = clipGradNorm([x, y, none], 10);
  assert.equal(norm, 5);
  assert.deepEqual(Array.from(x.grad!), [3, 0, 0]); // below maxNorm: untouched
  assert.deepEqual(Array.from(y.grad!), [0, 4]);

  const rng = new Rng(4);
  const ts = [Tensor.randn([7], rng), Tensor.randn([3, 3], rng)];
  for (const t of ts) t.grad = t.data.map((v) => v * 10);
  let want = 0;
  for (const t of ts) for (const g of t.grad!) want += g * g;
  want = Math.sqrt(want);
  const before = ts.map((t) => Array.from(t.grad!));
  const got = clipGradNorm(
    ts.map((t, i): [string, Tensor] => [`p${i}`, t]),
    1.5,
  );
  assert.equal(got, want);
  const coef = 1.5 / (want + 1e-6);
  ts.forEach((t, i) => {
    assertClose(
      t.grad!,
      before[i]!.map((g) => g * coef),
      "f32",
      `grad ${i}`,
    );
  });
  let after = 0;
  for (const t of ts) for (const g of t.grad!) after += g * g;
  assertClose([Math.sqrt(after)], [1.5], "f32", "norm after clipping");
});

test("clipGradNorm: the 1e-6 in the coefficient shows on small norms", () => {
  const x = gradTensor([3e-4, 4e-4]);
  const g = Array.from(x.grad!);
  const norm = Math.sqrt(g[0]! * g[0]! + g[1]! * g[1]!);
  assert.equal(clipGradNorm([x], 1e-4), norm);
  const coef = 1e-4 / (norm + 1e-6);
  x.grad!.forEach((v, i) => {
    const want = g[i]! * coef;
    assert.ok(Math.abs(v - want) <= 1e-6 * Math.abs(want), `grad ${i}: ${v} want ${want}`);
  });
});

test("clipGradNorm: maxNorm <= 0 only measures; a non-finite norm is returned and nothing is scaled", () => {
  const x = gradTensor([30, 40]);
  assert.equal(clipGradNorm([x], 0), 50);
  assert.equal(clipGradNorm([x], -1), 50);
  assert.deepEqual(Array.from(x.grad!), [30, 40]);

  const inf = gradTensor([1, Number.POSITIVE_INFINITY]);
  const other = gradTensor([2, 2]);
  assert.equal(clipGradNorm([inf, other], 1), Number.POSITIVE_INFINITY);
  assert.deepEqual(Array.from(other.grad!), [2, 2]);
  const nan = gradTensor([Number.NaN, 1]);
  assert.ok(Number.isNaN(clipGradNorm([nan, other], 1)));
  assert.deepEqual(Array.from(other.grad!), [2, 2]);
  assert.equal(clipGradNorm([], 1), 0);
});
