/**
 * The one helper every op test goes through: it checks an op's forward and backward against
 * central finite differences (in f32, so with the "fd" tolerance), and, when the active backend is
 * not the reference one, against the reference backend at f32 tolerance.
 */
import assert from "node:assert/strict";
import { backward, noGrad } from "../src/autograd/index.js";
import { backend, setBackend } from "../src/kernels/index.js";
import { Rng } from "../src/tensor/random.js";
import { Tensor } from "../src/tensor/tensor.js";
import { assertClose } from "./helpers.js";

/** Finite differences in f32 carry rounding noise of about 1e-7·|f|/h; this bound holds for every op here. */
export const FD_TOL = { rtol: 2e-2, atol: 2e-3 } as const;

export type OpFn = (inputs: Tensor[]) => Tensor;

function lossOf(out: Tensor, weights: Float32Array): number {
  let s = 0;
  for (let i = 0; i < out.size; i++) s += out.data[i]! * weights[i]!;
  return s;
}

/** Gradients of sum(fn(inputs) * w) for each input, via the tape. */
export function analyticGrads(
  fn: OpFn,
  inputs: Tensor[],
  w: Float32Array,
): { out: Tensor; grads: Float32Array[] } {
  const leaves = inputs.map((t) => t.clone(true));
  const out = fn(leaves);
  backward(out, w);
  return { out, grads: leaves.map((t) => t.grad ?? new Float32Array(t.size)) };
}

export function checkOp(
  name: string,
  fn: OpFn,
  inputs: Tensor[],
  opts: { seed?: number; h?: number; skipGrad?: number[] } = {},
): void {
  const rng = new Rng(opts.seed ?? 7);
  const probe = noGrad(() => fn(inputs));
  const w = Float32Array.from({ length: probe.size }, () => rng.normal());
  const { out, grads } = analyticGrads(fn, inputs, w);
  assertClose(out.data, probe.data, "f32", `${name}: forward with and without tape`);
  const h = opts.h ?? 1e-2;
  inputs.forEach((x, i) => {
    if (opts.skipGrad?.includes(i)) return;
    const numeric = new Float32Array(x.size);
    for (let j = 0; j < x.size; j++) {
      const orig = x.data[j]!;
      x.data[j] = orig + h;
      const up = lossOf(
        noGrad(() => fn(inputs)),
        w,
      );
      x.data[j] = orig - h;
      const down = lossOf(
        noGrad(() => fn(inputs)),
        w,
      );
      x.data[j] = orig;
      numeric[j] = (up - down) / (2 * h);
    }
    const { rtol, atol } = FD_TOL;
    grads[i]!.forEach((g, j) => {
      const want = numeric[j]!;
      assert.ok(
        Math.abs(g - want) <= atol + rtol * Math.abs(want),
        `${name}: d/d input ${i} [${j}]: autograd ${g} vs finite difference ${want}`,
      );
    });
  });
  const active = backend();
  if (active.name !== "ref") {
    setBackend("ref");
    try {
      const ref = analyticGrads(fn, inputs, w);
      assertClose(out.data, ref.out.data, "f32", `${name}: forward vs ref backend`);
      grads.forEach((g, i) => assertClose(g, ref.grads[i]!, "f32", `${name}: grad ${i} vs ref backend`));
    } finally {
      setBackend(active);
    }
  }
}

export function randn(shape: number[], rng: Rng, std = 1): Tensor {
  return Tensor.randn(shape, rng, std);
}
