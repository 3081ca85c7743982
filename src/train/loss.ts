/** Next-token language-model loss: position t predicts token t+1; masked and padded targets are ignored. */
import { crossEntropy } from "../autograd/ops.js";
import type { CausalLM } from "../models/index.js";
import type { Tensor } from "../tensor/tensor.js";

export const IGNORE = -100;

/**
 * ids: [B, T] -> targets: [B, T] with targets[b, t] = ids[b, t+1], IGNORE at t = T-1,
 * and IGNORE where mask[b, t+1] is 0 (mask[b, t] = 1 marks ids[b, t] as a target to predict).
 */
export function nextTokenTargets(
  ids: Int32Array,
  B: number,
  T: number,
  mask?: ArrayLike<number>,
): Int32Array {
  const targets = new Int32Array(B * T).fill(IGNORE);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t + 1 < T; t++) {
      const j = b * T + t + 1;
      if (!mask || mask[j]) targets[b * T + t] = ids[j]!;
    }
  }
  return targets;
}

/** Cross-entropy of the model's next-token predictions; "mean" over predicted tokens, or "sum". */
export function languageModelLoss(
  model: CausalLM,
  ids: Int32Array,
  shape: readonly [number, number],
  targets: Int32Array,
  reduction: "mean" | "sum" = "mean",
): Tensor {
  return crossEntropy(model.forward(ids, shape), targets, reduction);
}
