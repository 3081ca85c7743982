/** Autograd: differentiable ops, the tape, and the gradient table. */
export * from "./ops.js";
export type { OpName, OpSpecs } from "./spec.js";
export { backward, isGradEnabled, noGrad, zeroGrad } from "./tape.js";
