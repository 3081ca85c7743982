/**
 * One gradient rule per op. A rule gets the node, dL/dout, and which inputs need a gradient, and
 * returns dL/dinput for those (null for the rest). It never computes a gradient nobody needs:
 * for y = x·W with W frozen only dL/dx is computed.
 */
import { backend } from "../kernels/index.js";
import { broadcastStrides, sameShape, stridesOf } from "../tensor/shape.js";
import type { Tensor } from "../tensor/tensor.js";
import { attentionDims, matmulShapes } from "./ops.js";
import type { OpName } from "./spec.js";
import type { Node } from "./tape.js";

export type Grads = (Float32Array | null)[];
export type GradRule<K extends OpName> = (node: Node<K>, g: Float32Array, needs: readonly boolean[]) => Grads;

const last = (t: Tensor) => t.shape[t.shape.length - 1]!;

/** Reduces a gradient of the broadcast output shape back to the input's shape. */
function reduceTo(g: Float32Array, outShape: readonly number[], input: Tensor): Float32Array {
  if (sameShape(input.shape, outShape)) return g;
  const r = new Float32Array(input.size);
  backend().sumTo(r, g, outShape, broadcastStrides(input.shape, outShape));
  return r;
}

function mulGrad(g: Float32Array, shape: readonly number[], other: Tensor, self: Tensor): Float32Array {
  const t = new Float32Array(g.length);
  backend().binary("mul", t, g, other.data, shape, stridesOf(shape), broadcastStrides(other.shape, shape));
  return reduceTo(t, shape, self);
}

function matmulGrad(node: Node<"matmul">, g: Float32Array, needs: readonly boolean[]): Grads {
  const [a, b] = node.inputs as [Tensor, Tensor];
  const { transA, transB } = node.attrs;
  const { batch, M, N, K, bBroadcast } = matmulShapes(a, b, transA, transB);
  const k = backend();
  let da: Float32Array | null = null;
  let db: Float32Array | null = null;
  const sB = bBroadcast ? 0 : K * N;
  if (needs[0]) {
    da = new Float32Array(a.size);
    if (!transA) {
      // dA[M, K] = dC[M, N] @ op(B)ᵀ (B may be a frozen 16-bit weight: then dC is its a operand)
      k.matmul(da, g, b.weights(), {
        batch,
        M,
        N: K,
        K: N,
        transA: false,
        transB: !transB,
        strideA: M * N,
        strideB: sB,
        strideOut: M * K,
        accumulate: false,
      });
    } else {
      // dA[K, M] = op(B)[K, N] @ dCᵀ[N, M]
      k.matmul(da, b.data, g, {
        batch,
        M: K,
        N: M,
        K: N,
        transA: transB,
        transB: true,
        strideA: sB,
        strideB: M * N,
        strideOut: M * K,
        accumulate: false,
      });
    }
  }
  if (needs[1]) {
    db = new Float32Array(b.size);
    // a broadcast B sums its gradient over the batch: fold the batch into rows, or accumulate
    const fold = bBroadcast && !transA;
    const dims = {
      batch: fold ? 1 : batch,
      strideOut: bBroadcast ? 0 : K * N,
      accumulate: bBroadcast,
    };
    const rows = fold ? batch * M : M;
    if (!transB) {
      // dB[K, N] = op(A)ᵀ[K, M] @ dC[M, N]
      k.matmul(db, a.data, g, {
        ...dims,
        M: K,
        N,
        K: rows,
        transA: !transA,
        transB: false,
        strideA: M * K,
        strideB: M * N,
      });
    } else {
      // dB[N, K] = dCᵀ[N, M] @ op(A)[M, K]
      k.matmul(db, g, a.data, {
        ...dims,
        M: N,
        N: K,
        K: rows,
        transA: true,
        transB: transA,
        strideA: M * N,
        strideB: M * K,
      });
    }
  }
  return [da, db];
}

export const gradRules: { [K in OpName]: GradRule<K> } = {
  matmul: matmulGrad,
  add: (n, g, needs) => {
    const [a, b] = n.inputs as [Tensor, Tensor];
    return [needs[0] ? reduceTo(g, n.out.shape, a) : null, needs[1] ? reduceTo(g, n.out.shape, b) : null];
  },
  mul: (n, g, needs) => {
    const [a, b] = n.inputs as [Tensor, Tensor];
    return [needs[0] ? mulGrad(g, n.out.shape, b, a) : null, needs[1] ? mulGrad(g, n.out.shape, a, b) : null];
  },
  scale: (n, g) => {
    const dx = new Float32Array(g.length);
    backend().scale(dx, g, n.attrs.s);
    return [dx];
  },
  sum: (n, g) => [new Float32Array(n.inputs[0]!.size).fill(g[0]!)],
  reshape: (_n, g) => [g],
  slice: (n, g) => {
    const x = n.inputs[0]!;
    const dx = new Float32Array(x.size);
    backend().sliceBackward(dx, g, x.size / last(x), last(x), n.attrs.start, n.attrs.length);
    return [dx];
  },
  embedding: (n, g) => {
    const w = n.inputs[0]!;
    const dw = new Float32Array(w.size);
    backend().embeddingBackward(dw, g, n.attrs.ids, last(w));
    return [dw];
  },
  layerNorm: (n, g, needs) => {
    const [x, w] = n.inputs as [Tensor, Tensor];
    const C = last(x);
    const dx = needs[0] ? new Float32Array(x.size) : null;
    const dw = needs[1] ? new Float32Array(C) : null;
    const db = needs[2] ? new Float32Array(C) : null;
    backend().layerNormBackward(dx, dw, db, g, x.data, w.data, n.saved.mean, n.saved.rstd, x.size / C, C);
    return [dx, dw, db];
  },
  rmsNorm: (n, g, needs) => {
    const [x, w] = n.inputs as [Tensor, Tensor];
    const C = last(x);
    const dx = needs[0] ? new Float32Array(x.size) : null;
    const dw = needs[1] ? new Float32Array(C) : null;
    backend().rmsNormBackward(dx, dw, g, x.data, w.data, n.saved.rstd, x.size / C, C);
    return [dx, dw];
  },
  gelu: (n, g) => {
    const dx = new Float32Array(g.length);
    backend().geluBackward(dx, g, n.inputs[0]!.data);
    return [dx];
  },
  silu: (n, g) => {
    const dx = new Float32Array(g.length);
    backend().siluBackward(dx, g, n.inputs[0]!.data);
    return [dx];
  },
  softmax: (n, g) => {
    const C = last(n.out);
    const dx = new Float32Array(g.length);
    backend().softmaxBackward(dx, g, n.out.data, g.length / C, C);
    return [dx];
  },
  softcap: (n, g) => {
    const dx = new Float32Array(g.length);
    backend().softcapBackward(dx, g, n.out.data, n.attrs.cap);
    return [dx];
  },
  rope: (n, g) => {
    // the rotation is orthogonal, so its gradient is the inverse rotation
    const [B, T, H, D] = n.out.shape as [number, number, number, number];
    const dx = new Float32Array(g.length);
    backend().rope(dx, g, B, T, H, D, n.attrs.offset, n.attrs.freqs, n.attrs.scale, true);
    return [dx];
  },
  attention: (n, g, needs) => {
    const [q, k, v] = n.inputs as [Tensor, Tensor, Tensor];
    const d = attentionDims(q, k, v, n.attrs);
    const dq = needs[0] ? new Float32Array(q.size) : null;
    const dk = needs[1] ? new Float32Array(k.size) : null;
    const dv = needs[2] ? new Float32Array(v.size) : null;
    backend().attentionBackward(dq, dk, dv, g, q.data, k.data, v.data, n.saved.att, d);
    return [dq, dk, dv];
  },
  crossEntropy: (n, g) => {
    const logits = n.inputs[0]!;
    const V = last(logits);
    const dl = new Float32Array(logits.size);
    const s = n.attrs.reduction === "mean" ? g[0]! / n.saved.count : g[0]!;
    backend().crossEntropyBackward(dl, logits.data, n.saved.lse, n.attrs.targets, logits.size / V, V, s);
    return [dl];
  },
  dropout: (n, g) => {
    const dx = new Float32Array(g.length);
    backend().binary("mul", dx, g, n.saved.mask, [g.length], [1], [1]);
    return [dx];
  },
  // the forward pass computed the gradients for g = 1; they are linear in g
  linearCrossEntropy: (n, g, needs) => {
    const scaled = (d: Float32Array | null) => {
      if (!d || g[0] === 1) return d;
      backend().scale(d, d, g[0]!);
      return d;
    };
    return [needs[0] ? scaled(n.saved.dx) : null, needs[1] ? scaled(n.saved.dw) : null];
  },
};

/** The inputs whose data (and whether the output's data) a gradient rule reads, given `needs`. */
type Reads = (needs: readonly boolean[]) => readonly (number | "out")[];
const theOther: Reads = (needs) => [...(needs[0] ? [1] : []), ...(needs[1] ? [0] : [])];
const none: Reads = () => [];

/**
 * What each rule reads, so the tape keeps only that alive (everything else it keeps as shapes).
 * matmul with a frozen weight reads the weight to give dL/dx, but not x; add, slice and reshape read
 * no data at all.
 */
export const ruleReads: { [K in OpName]: Reads } = {
  matmul: theOther,
  add: none,
  mul: theOther,
  scale: none,
  sum: none,
  reshape: none,
  slice: none,
  embedding: none,
  layerNorm: () => [0, 1],
  rmsNorm: () => [0, 1],
  gelu: () => [0],
  silu: () => [0],
  softmax: () => ["out"],
  softcap: () => ["out"],
  rope: none,
  attention: () => [0, 1, 2],
  crossEntropy: () => [0],
  dropout: none,
  linearCrossEntropy: none,
};
