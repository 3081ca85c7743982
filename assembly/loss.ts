/** Cross-entropy over a vocabulary: logits: [N, V], targets: [N] (negative = ignored). Rows [n0, n1). */
import { expShift, rowMax } from "./norms";
import { sexp, vexp } from "./simd";

// -> losses: [N] (0 where ignored), lse: [N]
export function crossEntropyForward(losses: usize, lse: usize, logits: usize, targets: usize, V: i32, n0: i32, n1: i32): void {
  for (let n = n0; n < n1; n++) {
    const row = logits + ((<usize>n * V) << 2);
    const mx = rowMax(row, V);
    const l: f32 = mx + <f32>Math.log(<f64>expShift(0, row, V, mx));
    store<f32>(lse + (<usize>n << 2), l);
    const t = load<i32>(targets + (<usize>n << 2));
    store<f32>(losses + (<usize>n << 2), t < 0 ? 0 : l - load<f32>(row + (<usize>t << 2)));
  }
}

// dlogits: [N, V] = scale * (softmax(logits) - onehot(target)); ignored rows get 0
export function crossEntropyBackward(dlogits: usize, logits: usize, lse: usize, targets: usize, V: i32, scale: f32, n0: i32, n1: i32): void {
  for (let n = n0; n < n1; n++) {
    const o0 = (<usize>n * V) << 2;
    const t = load<i32>(targets + (<usize>n << 2));
    if (t < 0) {
      memory.fill(dlogits + o0, 0, <usize>V << 2);
      continue;
    }
    const l = load<f32>(lse + (<usize>n << 2));
    const vl = f32x4.splat(l);
    const vs = f32x4.splat(scale);
    let v = 0;
    for (; v + 4 <= V; v += 4) {
      const o = o0 + (<usize>v << 2);
      v128.store(dlogits + o, f32x4.mul(vs, vexp(f32x4.sub(v128.load(logits + o), vl))));
    }
    for (; v < V; v++) {
      const o = o0 + (<usize>v << 2);
      store<f32>(dlogits + o, scale * sexp(load<f32>(logits + o) - l));
    }
    const ot = dlogits + o0 + (<usize>t << 2);
    store<f32>(ot, load<f32>(ot) - scale);
  }
}
