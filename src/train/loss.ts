/** Next-token language-model loss: position t predicts token t+1; masked and padded targets are ignored. */
import { crossEntropy, embedding, linearCrossEntropy, reshape } from "../autograd/ops.js";
import type { CausalLM } from "../models/index.js";
import { Linear } from "../nn/layers.js";
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

/**
 * Cross-entropy of the model's next-token predictions; "mean" over predicted tokens, or "sum".
 * Only the rows with a target reach the head (see headLoss).
 */
export function languageModelLoss(
  model: CausalLM,
  ids: Int32Array,
  shape: readonly [number, number],
  targets: Int32Array,
  reduction: "mean" | "sum" = "mean",
): Tensor {
  return headLoss(model, model.hidden(ids, shape), targets, reduction);
}

/**
 * The head and cross-entropy on hidden states h: [..., C] with one target per row (IGNORE = none).
 * The rows that have a target are gathered first, so the head's matmul and the loss see only those.
 * A plain bias-free head (every family's lm_head unless an adapter targets it) runs fused with the
 * loss (linearCrossEntropy), so the [rows, V] logits never exist at once; the model's final logit soft
 * cap, if any, is applied inside it.
 */
export function headLoss(
  model: CausalLM,
  h: Tensor,
  targets: Int32Array,
  reduction: "mean" | "sum" = "mean",
): Tensor {
  const C = h.shape[h.shape.length - 1]!;
  const N = h.size / C;
  const rows: number[] = [];
  for (let i = 0; i < targets.length; i++) if (targets[i]! >= 0) rows.push(i);
  // nothing to predict: the plain path keeps crossEntropy's error (mean) and its zero (sum)
  if (rows.length === 0 || targets.length !== N) return crossEntropy(model.head(h), targets, reduction);
  let x = reshape(h, [N, C]);
  let t = targets;
  if (rows.length < N) {
    x = embedding(x, Int32Array.from(rows)); // a row gather; its backward scatters the rows back
    t = Int32Array.from(rows, (i) => targets[i]!);
  }
  const head = model.lm_head;
  if (head instanceof Linear && head.bias === null)
    return linearCrossEntropy(x, head.weight, t, reduction, { softcap: model.logitSoftcap });
  return crossEntropy(model.head(x), t, reduction);
}
