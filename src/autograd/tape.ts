/**
 * The tape: which op produced which tensor, and reverse-mode differentiation over it.
 * A node is recorded only when grad mode is on and some input requires grad, so a frozen weight
 * never gets a gradient buffer, and no gradient is computed for it.
 */
import { backend } from "../kernels/index.js";
import type { Tensor } from "../tensor/tensor.js";
import { gradRules } from "./rules.js";
import type { OpName, OpSpecs } from "./spec.js";

export interface Node<K extends OpName = OpName> {
  readonly op: K;
  readonly inputs: readonly Tensor[];
  readonly out: Tensor;
  readonly attrs: OpSpecs[K]["attrs"];
  readonly saved: OpSpecs[K]["saved"];
}

const producers = new WeakMap<Tensor, Node>();
let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn with the tape off: nothing is recorded, and results never require grad. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** True when an op on these inputs must be recorded. */
export function needsTape(inputs: readonly Tensor[]): boolean {
  return gradEnabled && inputs.some((t) => t.requiresGrad);
}

/** Records that `out` came from `op` on `inputs`, when the tape needs it. Returns out. */
export function record<K extends OpName>(
  op: K,
  inputs: readonly Tensor[],
  out: Tensor,
  attrs: OpSpecs[K]["attrs"],
  saved: OpSpecs[K]["saved"],
): Tensor {
  if (needsTape(inputs)) {
    out.requiresGrad = true;
    producers.set(out, { op, inputs, out, attrs, saved });
  }
  return out;
}

function addInto(dst: Float32Array, src: Float32Array): void {
  backend().binary("add", dst, dst, src, [dst.length], [1], [1]);
}

/**
 * Backpropagates from `root` (a scalar unless `seed` is given), accumulating into `.grad` of every
 * leaf that requires grad. The graph is released afterwards, as PyTorch does without retain_graph.
 */
export function backward(root: Tensor, seed?: Float32Array): void {
  if (!root.requiresGrad) {
    throw new Error("backward(): the tensor does not require grad; did every trainable weight get frozen?");
  }
  if (!seed && root.size !== 1) {
    throw new Error(`backward(): give a seed gradient for a non-scalar tensor of shape [${root.shape}]`);
  }
  // Topological order by iterative depth-first search.
  const order: Tensor[] = [];
  const seen = new Set<Tensor>([root]);
  const stack: [Tensor, number][] = [[root, 0]];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const node = producers.get(top[0]);
    if (node && top[1] < node.inputs.length) {
      const next = node.inputs[top[1]++]!;
      if (!seen.has(next) && producers.has(next)) {
        seen.add(next);
        stack.push([next, 0]);
      }
    } else {
      order.push(top[0]);
      stack.pop();
    }
  }
  const grads = new Map<Tensor, Float32Array>([[root, seed ?? new Float32Array([1])]]);
  for (let i = order.length - 1; i >= 0; i--) {
    const t = order[i]!;
    const node = producers.get(t)!;
    const g = grads.get(t);
    grads.delete(t);
    producers.delete(t);
    if (!g) continue;
    const needs = node.inputs.map((x) => x.requiresGrad);
    const rule = gradRules[node.op] as (
      n: Node,
      g: Float32Array,
      needs: boolean[],
    ) => (Float32Array | null)[];
    const results = rule(node, g, needs);
    node.inputs.forEach((x, j) => {
      const r = results[j];
      if (!r || !needs[j]) return;
      if (producers.has(x)) {
        const have = grads.get(x);
        if (have) addInto(have, r);
        else grads.set(x, r === g ? r.slice() : r);
      } else if (x.grad) {
        addInto(x.grad, r);
      } else {
        x.grad = r === g ? r.slice() : r;
      }
    });
  }
}

/** Clears the gradients of the given tensors. */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) p.grad = null;
}
