/**
 * The op set. Each op names its attributes (fixed at call time) and what its forward pass saves
 * for the backward pass. The gradient table in rules.ts is a mapped type over these names, so an
 * op without a gradient rule does not compile.
 */

export interface OpSpecs {
  matmul: { attrs: { transA: boolean; transB: boolean }; saved: null };
  add: { attrs: null; saved: null };
  mul: { attrs: null; saved: null };
  scale: { attrs: { s: number }; saved: null };
  sum: { attrs: null; saved: null };
  reshape: { attrs: null; saved: null };
  slice: { attrs: { start: number; length: number }; saved: null };
  embedding: { attrs: { ids: Int32Array }; saved: null };
  layerNorm: { attrs: { eps: number }; saved: { mean: Float32Array; rstd: Float32Array } };
  rmsNorm: { attrs: { eps: number }; saved: { rstd: Float32Array } };
  gelu: { attrs: null; saved: null };
  silu: { attrs: null; saved: null };
  softmax: { attrs: null; saved: null };
  softcap: { attrs: { cap: number }; saved: null };
  rope: { attrs: { offset: number; freqs: Float64Array; scale: number }; saved: null };
  attention: {
    attrs: { causal?: boolean; scale?: number; window?: number; softcap?: number };
    saved: { att: Float32Array };
  };
  crossEntropy: {
    attrs: { targets: Int32Array; reduction: "mean" | "sum" };
    saved: { lse: Float32Array; count: number };
  };
  dropout: { attrs: { p: number }; saved: { mask: Float32Array } };
  /** Saves the gradients themselves, computed during the forward pass for dL/dloss = 1. */
  linearCrossEntropy: {
    attrs: { reduction: "mean" | "sum"; softcap?: number };
    saved: { dx: Float32Array | null; dw: Float32Array | null };
  };
}

export type OpName = keyof OpSpecs;
