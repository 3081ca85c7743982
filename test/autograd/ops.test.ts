/** Every op, forward and backward: finite differences on odd sizes, and PyTorch fixtures. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, it } from "node:test";
import * as ops from "../../src/autograd/ops.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { assertClose, fixturesDir } from "../helpers.js";
import { analyticGrads, checkOp, randn } from "../op-check.js";

const rng = new Rng(1234);

describe("ops vs finite differences", () => {
  for (const [transA, transB] of [
    [false, false],
    [false, true],
    [true, false],
    [true, true],
  ] as const) {
    const tag = `${transA ? "T" : "N"}${transB ? "T" : "N"}`;
    it(`matmul ${tag}, 2-D b broadcast over a batch, odd sizes`, () => {
      for (const [M, K, N] of [
        [1, 7, 1],
        [7, 1, 3],
        [3, 65, 2],
      ] as const) {
        const a = randn(transA ? [2, K, M] : [2, M, K], rng);
        const b = randn(transB ? [N, K] : [K, N], rng);
        checkOp(`matmul ${tag} ${M}x${K}x${N}`, ([x, y]) => ops.matmul(x!, y!, { transA, transB }), [a, b]);
      }
    });
    it(`matmul ${tag}, batched b`, () => {
      const a = randn(transA ? [3, 5, 7] : [3, 7, 5], rng);
      const b = randn(transB ? [3, 4, 5] : [3, 5, 4], rng);
      checkOp(`matmul batched ${tag}`, ([x, y]) => ops.matmul(x!, y!, { transA, transB }), [a, b]);
    });
  }

  it("add and mul broadcast", () => {
    for (const [sa, sb] of [
      [[2, 3, 7], [7]],
      [
        [2, 1, 7],
        [3, 1],
      ],
      [[65], []],
      [[1], [7]],
    ] as number[][][]) {
      const a = randn(sa!, rng);
      const b = randn(sb!, rng);
      checkOp(`add ${sa} ${sb}`, ([x, y]) => ops.add(x!, y!), [a, b]);
      checkOp(`mul ${sa} ${sb}`, ([x, y]) => ops.mul(x!, y!), [a, b]);
    }
  });

  it("scale, sum, reshape, slice", () => {
    checkOp("scale", ([x]) => ops.scale(x!, -0.37), [randn([7], rng)]);
    checkOp("sum", ([x]) => ops.sum(x!), [randn([3, 7], rng)]);
    const weights = randn([7, 3], rng);
    checkOp("reshape", ([x]) => ops.mul(ops.reshape(x!, [7, -1]), weights), [randn([3, 7], rng)]);
    checkOp("slice", ([x]) => ops.slice(x!, 4, 5), [randn([2, 3, 12], rng)]);
    checkOp("slice whole", ([x]) => ops.slice(x!, 0, 1), [randn([65, 1], rng)]);
  });

  it("embedding with repeated ids", () => {
    const ids = Int32Array.from([3, 0, 3, 6, 1, 3, 2]);
    checkOp("embedding", ([w]) => ops.embedding(w!, ids, [1, 7]), [randn([7, 5], rng)]);
  });

  it("layer norm and RMS norm", () => {
    for (const C of [1, 7, 65]) {
      const x = randn([3, C], rng);
      const w = randn([C], rng);
      const b = randn([C], rng);
      // C = 1 makes layer norm constant: its x-gradient is exactly zero, which FD confirms
      checkOp(`layerNorm C=${C}`, ([a, c, d]) => ops.layerNorm(a!, c!, d!, 1e-5), [x, w, b]);
      checkOp(`rmsNorm C=${C}`, ([a, c]) => ops.rmsNorm(a!, c!, 1e-6), [x, w]);
    }
  });

  it("gelu, silu, softmax", () => {
    for (const n of [1, 7, 65]) {
      checkOp(`gelu ${n}`, ([x]) => ops.gelu(x!), [randn([n], rng, 2)]);
      checkOp(`silu ${n}`, ([x]) => ops.silu(x!), [randn([n], rng, 2)]);
      checkOp(`softmax ${n}`, ([x]) => ops.softmax(x!), [randn([2, n], rng)]);
    }
  });

  it("partial, scaled rope (LongRoPE on 3/4 of the head) against finite differences", () => {
    checkOp("rope partial", ([x]) => ops.rope(x!, 2, ops.ropeFrequencies(6, 500), 1.2), [
      randn([2, 3, 2, 8], rng),
    ]);
  });

  it("rope at offset 0 and 5", () => {
    for (const offset of [0, 5]) {
      checkOp(`rope offset ${offset}`, ([x]) => ops.rope(x!, offset, 10000), [randn([2, 3, 3, 8], rng)]);
    }
  });

  it("causal attention: multi-head, grouped-query, cache offset", () => {
    const cases: [number[], number[]][] = [
      [
        [1, 1, 1, 4],
        [1, 1, 1, 4],
      ],
      [
        [2, 7, 3, 4],
        [2, 7, 3, 4],
      ],
      [
        [1, 5, 4, 2],
        [1, 5, 2, 2],
      ],
      [
        [1, 3, 2, 4],
        [1, 7, 1, 4],
      ],
    ];
    for (const [qs, ks] of cases) {
      checkOp(`attention q${qs} k${ks}`, ([q, k, v]) => ops.attention(q!, k!, v!), [
        randn(qs, rng),
        randn(ks, rng),
        randn(ks, rng),
      ]);
    }
  });

  it("sliding-window attention with its own scale, against finite differences", () => {
    for (const [qs, ks, window] of [
      [[1, 7, 2, 4], [1, 7, 1, 4], 3],
      [[2, 3, 2, 4], [2, 8, 2, 4], 2],
    ] as [number[], number[], number][]) {
      checkOp(
        `attention window ${window}`,
        ([q, k, v]) => ops.attention(q!, k!, v!, { window, scale: 0.4 }),
        [randn(qs, rng), randn(ks, rng), randn(ks, rng)],
      );
    }
  });

  it("soft-capped attention (a cap the scores exceed), with a window and GQA", () => {
    for (const [qs, ks, opts] of [
      [[1, 5, 2, 4], [1, 5, 2, 4], { softcap: 0.7 }],
      [[2, 3, 4, 4], [2, 7, 2, 4], { softcap: 1.3, window: 3, scale: 0.9 }],
      [[1, 4, 2, 4], [1, 4, 1, 4], { softcap: 1, causal: false }],
    ] as [number[], number[], ops.AttentionOptions][]) {
      checkOp(`attention ${JSON.stringify(opts)}`, ([q, k, v]) => ops.attention(q!, k!, v!, opts), [
        randn(qs, rng, 2),
        randn(ks, rng, 2),
        randn(ks, rng),
      ]);
    }
  });

  it("soft-capped attention equals softmax(cap·tanh(s/cap)) @ v composed of other ops (one head, no mask)", () => {
    const [T, D, cap, sc] = [5, 4, 0.9, 0.8];
    const [q, k, v] = [randn([1, T, 1, D], rng, 2), randn([1, T, 1, D], rng, 2), randn([1, T, 1, D], rng)];
    const got = ops.attention(q, k, v, { causal: false, softcap: cap, scale: sc });
    const flat = (x: Tensor) => ops.reshape(x, [T, D]);
    const scores = ops.scale(ops.matmul(flat(q), flat(k), { transB: true }), sc);
    const want = ops.matmul(ops.softmax(ops.softcap(scores, cap)), flat(v));
    assert.ok(
      scores.data.some((s) => Math.abs(s) > 2 * cap),
      "the cap bites",
    );
    assertClose(got.data, want.data, "f32", "attention with a soft cap");
  });

  it("softcap: inside the cap, near it and saturated", () => {
    checkOp("softcap 3", ([x]) => ops.softcap(x!, 3), [randn([3, 7], rng, 4)]);
    checkOp("softcap 0.5", ([x]) => ops.softcap(x!, 0.5), [randn([65], rng)]);
  });

  it("cross-entropy with ignored targets, mean and sum", () => {
    const targets = Int32Array.from([3, -100, 0, 6, 6, 1, 2]);
    checkOp("crossEntropy mean", ([x]) => ops.crossEntropy(x!, targets), [randn([7, 7], rng)]);
    checkOp("crossEntropy sum", ([x]) => ops.crossEntropy(x!, targets, "sum"), [randn([7, 7], rng)]);
    checkOp("crossEntropy V=65", ([x]) => ops.crossEntropy(x!, Int32Array.from([64])), [randn([1, 65], rng)]);
  });

  it("dropout with a fixed mask", () => {
    const x = randn([65], rng);
    checkOp("dropout", ([t]) => ops.dropout(t!, 0.3, new Rng(99)), [x]);
    const y = ops.dropout(x, 0.5, new Rng(3));
    const kept = y.data.filter((v) => v !== 0).length;
    assert.ok(kept > 15 && kept < 50, `dropout kept ${kept} of 65`);
    y.data.forEach((v, i) => v !== 0 && assert.ok(Math.abs(v - 2 * x.data[i]!) < 1e-6));
  });
});

describe("op errors name the values", () => {
  it("rejects mismatched shapes and out-of-range ids", () => {
    assert.throws(
      () => ops.matmul(Tensor.zeros([2, 3]), Tensor.zeros([4, 5])),
      /inner dims differ.*\[2, 3\].*\[4, 5\]/,
    );
    assert.throws(() => ops.add(Tensor.zeros([2, 3]), Tensor.zeros([4])), /do not broadcast/);
    assert.throws(() => ops.embedding(Tensor.zeros([4, 2]), Int32Array.from([4])), /token id 4 is outside/);
    assert.throws(
      () => ops.crossEntropy(Tensor.zeros([1, 3]), Int32Array.from([-100])),
      /every target is ignored/,
    );
    assert.throws(() => ops.crossEntropy(Tensor.zeros([1, 3]), Int32Array.from([3])), /target 3 is outside/);
    assert.throws(() => ops.reshape(Tensor.zeros([6]), [4, -1]), /cannot view/);
    assert.throws(
      () => ops.attention(Tensor.zeros([1, 2, 3, 4]), Tensor.zeros([1, 2, 2, 4]), Tensor.zeros([1, 2, 2, 4])),
      /Hq % Hkv/,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// PyTorch fixtures (scripts/make_fixtures.py): forward and gradients at f32 tolerance.

interface Arr {
  shape: number[];
  data: number[];
}
interface OpCase {
  op: string;
  attrs: Record<string, number | boolean>;
  inputs: Record<string, Arr>;
  ints: Record<string, Arr>;
  out: Arr;
  grad_out: Arr;
  grads: Record<string, Arr>;
}

const read = (file: string) =>
  JSON.parse(readFileSync(resolve(fixturesDir, "ops", file), "utf8")) as Record<string, OpCase | string>;
// ops.json: scripts/make_fixtures.py; attention_softcap.json: transformers' Gemma 2 eager attention
// (scripts/make_family_fixtures.py), soft cap, scale and sliding window as attrs
const cases = Object.fromEntries(
  [...Object.entries(read("ops.json")), ...Object.entries(read("attention_softcap.json"))].filter(
    (e): e is [string, OpCase] => typeof e[1] === "object",
  ),
);

function opFor(c: OpCase): (xs: Record<string, Tensor>) => Tensor {
  const a = c.attrs;
  const ints = (k: string) => Int32Array.from(c.ints[k]!.data);
  switch (c.op) {
    case "matmul":
      return (x) => ops.matmul(x.a!, x.b!, { transA: Boolean(a.transA), transB: Boolean(a.transB) });
    case "add":
      return (x) => ops.add(x.a!, x.b!);
    case "mul":
      return (x) => ops.mul(x.a!, x.b!);
    case "embedding":
      return (x) => ops.embedding(x.weight!, ints("ids"), c.ints.ids!.shape);
    case "layer_norm":
      return (x) => ops.layerNorm(x.x!, x.weight!, x.bias!, Number(a.eps));
    case "rms_norm":
      return (x) => ops.rmsNorm(x.x!, x.weight!, Number(a.eps));
    case "gelu_tanh":
      return (x) => ops.gelu(x.x!);
    case "silu":
      return (x) => ops.silu(x.x!);
    case "softmax":
      return (x) => ops.softmax(x.x!);
    case "rope":
      return (x) => ops.rope(x.x!, Number(a.offset), ops.ropeFrequencies(x.x!.shape[3]!, Number(a.theta)));
    case "attention":
      return (x) =>
        ops.attention(x.q!, x.k!, x.v!, {
          causal: Boolean(a.causal ?? true),
          ...(a.scale !== undefined && { scale: Number(a.scale) }),
          ...(a.window !== undefined && { window: Number(a.window) }),
          ...(a.softcap !== undefined && { softcap: Number(a.softcap) }),
        });
    case "cross_entropy":
      return (x) => ops.crossEntropy(x.logits!, ints("targets"));
    case "slice":
      return (x) => ops.slice(x.x!, Number(a.start), Number(a.length));
    case "sum":
      return (x) => ops.sum(x.x!);
    case "scale":
      return (x) => ops.scale(x.x!, Number(a.s));
    default:
      throw new Error(`fixture op ${c.op} has no mapping in this test`);
  }
}

describe("ops vs PyTorch fixtures", () => {
  for (const [name, c] of Object.entries(cases)) {
    it(name, () => {
      const names = Object.keys(c.inputs);
      const inputs = names.map((k) => Tensor.from(c.inputs[k]!.data, c.inputs[k]!.shape));
      const fn = opFor(c);
      const { out, grads } = analyticGrads(
        (xs) => fn(Object.fromEntries(names.map((k, i) => [k, xs[i]!]))),
        inputs,
        Float32Array.from(c.grad_out.data),
      );
      assert.deepEqual(out.shape, c.out.shape, `${name}: output shape`);
      assertClose(out.data, c.out.data, "f32", `${name}: forward`);
      names.forEach((k, i) => {
        if (c.grads[k]) assertClose(grads[i]!, c.grads[k]!.data, "f32", `${name}: d/d${k}`);
      });
    });
  }
});
