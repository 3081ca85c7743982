/**
 * The tape: which op produced which tensor, and reverse-mode differentiation over it.
 * A node is recorded only when grad mode is on and some input requires grad, so a frozen weight
 * never gets a gradient buffer, and no gradient is computed for it.
 */
import { backend } from "../kernels/index.js";
import { Tensor } from "../tensor/tensor.js";
import { type Grads, gradRules, ruleReads } from "./rules.js";
import type { OpName, OpSpecs } from "./spec.js";

export interface Node<K extends OpName = OpName> {
  readonly op: K;
  /** The op's inputs as its rule sees them: tensors whose data the rule does not read are shape-only. */
  readonly inputs: readonly Tensor[];
  readonly out: Tensor;
  readonly attrs: OpSpecs[K]["attrs"];
  readonly saved: OpSpecs[K]["saved"];
}

/**
 * A tape entry links to the entries that produced its inputs, not to the tensors, so an intermediate
 * whose data no rule reads is freed as soon as forward code drops it. `node` is null once backward has
 * used it, which releases what it saved.
 */
interface Entry {
  node: Node | null;
  readonly parents: readonly (Entry | null)[];
  /** Which inputs required grad when the op ran. */
  readonly needs: readonly boolean[];
}

const producers = new WeakMap<Tensor, Entry>();
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

/** A stand-in with t's shape and no data: reading its data throws. */
function shapeOnly(t: Tensor): Tensor {
  const s = Object.create(Tensor.prototype) as Tensor;
  Object.defineProperties(s, {
    shape: { value: t.shape },
    size: { value: t.size },
    requiresGrad: { value: t.requiresGrad },
    grad: { value: null },
    data: {
      get() {
        throw new Error("autograd: a gradient rule read data the tape did not keep (see ruleReads)");
      },
    },
  });
  return s;
}

/**
 * Records that `out` came from `op` on `inputs`, when the tape needs it. Returns out.
 * The node keeps the data of only the tensors its rule reads (ruleReads) and of the leaves that get a
 * gradient; the rest it keeps as shapes, so their storage is freed once the forward code drops them.
 */
export function record<K extends OpName>(
  op: K,
  inputs: readonly Tensor[],
  out: Tensor,
  attrs: OpSpecs[K]["attrs"],
  saved: OpSpecs[K]["saved"],
): Tensor {
  if (!needsTape(inputs)) return out;
  out.requiresGrad = true;
  const needs = inputs.map((x) => x.requiresGrad);
  const parents = inputs.map((x) => producers.get(x) ?? null);
  const reads = new Set<number | "out">(
    (ruleReads[op] as (needs: readonly boolean[]) => readonly (number | "out")[])(needs),
  );
  const kept = inputs.map((x, j) => (reads.has(j) || (needs[j] && !parents[j]) ? x : shapeOnly(x)));
  const node = { op, inputs: kept, out: reads.has("out") ? out : shapeOnly(out), attrs, saved };
  producers.set(out, { node, parents, needs });
  return out;
}

function addInto(dst: Float32Array, src: Float32Array): void {
  backend().binary("add", dst, dst, src, [dst.length], [1], [1]);
}

/** Every live entry that root depends on, inputs before the entries that use them. */
function topologicalOrder(root: Entry): (Entry | null)[] {
  const order: (Entry | null)[] = [];
  const seen = new Set<Entry>([root]);
  const stack: [Entry, number][] = [[root, 0]];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const next = top[0].parents[top[1]++];
    if (next === undefined) {
      order.push(top[0]);
      stack.pop();
    } else if (next?.node && !seen.has(next)) {
      seen.add(next);
      stack.push([next, 0]);
    }
  }
  return order;
}

/**
 * Backpropagates from `root` (a scalar unless `seed` is given), accumulating into `.grad` of every
 * leaf that requires grad. Each node's saved data is released as soon as its rule has run, and the
 * graph is gone afterwards, as PyTorch does without retain_graph.
 */
export function backward(root: Tensor, seed?: Float32Array): void {
  if (!root.requiresGrad) {
    throw new Error("backward(): the tensor does not require grad; did every trainable weight get frozen?");
  }
  if (!seed && root.size !== 1) {
    throw new Error(`backward(): give a seed gradient for a non-scalar tensor of shape [${root.shape}]`);
  }
  const top = producers.get(root);
  if (!top?.node) {
    throw new Error("backward(): no recorded op produced this tensor, or an earlier backward() released it");
  }
  const order = topologicalOrder(top);
  const grads = new Map<Entry, Float32Array>([[top, seed ?? new Float32Array([1])]]);
  for (let i = order.length - 1; i >= 0; i--) {
    const entry = order[i]!;
    order[i] = null;
    const node = entry.node!;
    entry.node = null;
    const g = grads.get(entry);
    grads.delete(entry);
    if (!g) continue;
    const rule = gradRules[node.op] as (n: Node, g: Float32Array, needs: readonly boolean[]) => Grads;
    const results = rule(node, g, entry.needs);
    // g is this loop's alone now (out of `grads`), so a rule that passes it on unchanged (add, reshape)
    // hands it to the first input that keeps it, without a copy, and only a second one (x + y: both)
    // takes a copy; the caller's seed is never handed on. (A copy each time was 2.8% of a profile of the
    // small Llama's training step, its residual adds' [8, 256, 256] gradients; end to end the gain is
    // within the run-to-run noise, a Zen 5 at LORA_ISA=avx2.)
    let handed = g === seed;
    node.inputs.forEach((x, j) => {
      const r = results[j];
      if (!r || !entry.needs[j]) return;
      const parent = entry.parents[j];
      if (parent && !parent.node) {
        throw new Error("backward(): part of this graph was released by an earlier backward()");
      }
      const own = () => {
        if (r !== g) return r;
        if (handed) return r.slice();
        handed = true;
        return g;
      };
      const have = parent ? grads.get(parent) : x.grad;
      if (have) addInto(have, r);
      else if (parent) grads.set(parent, own());
      else x.grad = own();
    });
  }
}

/** Clears the gradients of the given tensors. */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) p.grad = null;
}
