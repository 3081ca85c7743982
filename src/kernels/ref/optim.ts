/** Reference AdamW update (decoupled weight decay, bias-corrected moments). */
import type { AdamWParams } from "../backend.js";

export function adamw(
  param: Float32Array,
  grad: Float32Array,
  m: Float32Array,
  v: Float32Array,
  p: AdamWParams,
): void {
  const { lr, beta1, beta2, eps, weightDecay, step } = p;
  const bc1 = 1 - beta1 ** step;
  const bc2 = 1 - beta2 ** step;
  for (let i = 0; i < param.length; i++) {
    const g = grad[i]!;
    m[i] = beta1 * m[i]! + (1 - beta1) * g;
    v[i] = beta2 * v[i]! + (1 - beta2) * g * g;
    const mhat = m[i]! / bc1;
    const vhat = v[i]! / bc2;
    param[i] = param[i]! - lr * weightDecay * param[i]! - (lr * mhat) / (Math.sqrt(vhat) + eps);
  }
}
