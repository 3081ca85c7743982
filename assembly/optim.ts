/** AdamW in place: decoupled weight decay, bias-corrected moments (bc1 = 1 - beta1^t, bc2 = 1 - beta2^t). */
import { madd } from "./simd";

// param, grad, m, v: [n]
export function adamw(param: usize, grad: usize, m: usize, v: usize, n: i32, lr: f32, beta1: f32, beta2: f32, eps: f32, wd: f32, bc1: f32, bc2: f32): void {
  const b1 = f32x4.splat(beta1);
  const c1 = f32x4.splat(1 - beta1);
  const b2 = f32x4.splat(beta2);
  const c2 = f32x4.splat(1 - beta2);
  const ib1 = f32x4.splat(1 / bc1);
  const ib2 = f32x4.splat(1 / bc2);
  const vlr = f32x4.splat(lr);
  const decay = f32x4.splat(lr * wd);
  const veps = f32x4.splat(eps);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const g = v128.load(grad + o);
    const mi = madd(b1, v128.load(m + o), f32x4.mul(c1, g));
    const vi = madd(b2, v128.load(v + o), f32x4.mul(f32x4.mul(c2, g), g));
    v128.store(m + o, mi);
    v128.store(v + o, vi);
    const p = v128.load(param + o);
    const step = f32x4.div(f32x4.mul(vlr, f32x4.mul(mi, ib1)), f32x4.add(f32x4.sqrt(f32x4.mul(vi, ib2)), veps));
    v128.store(param + o, f32x4.sub(f32x4.sub(p, f32x4.mul(decay, p)), step));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const g = load<f32>(grad + o);
    const mi = beta1 * load<f32>(m + o) + (1 - beta1) * g;
    const vi = beta2 * load<f32>(v + o) + (1 - beta2) * g * g;
    store<f32>(m + o, mi);
    store<f32>(v + o, vi);
    const p = load<f32>(param + o);
    store<f32>(param + o, p - lr * wd * p - (lr * (mi / bc1)) / (Mathf.sqrt(vi / bc2) + eps));
  }
}
