/** Reference cross-entropy over a vocabulary, forward and backward. Negative targets are ignored. */

export function crossEntropyForward(
  losses: Float32Array,
  lse: Float32Array,
  logits: Float32Array,
  targets: Int32Array,
  N: number,
  V: number,
): void {
  for (let n = 0; n < N; n++) {
    const o = n * V;
    let mx = -Infinity;
    for (let v = 0; v < V; v++) mx = Math.max(mx, logits[o + v]!);
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(logits[o + v]! - mx);
    const l = mx + Math.log(sum);
    lse[n] = l;
    const t = targets[n]!;
    losses[n] = t < 0 ? 0 : l - logits[o + t]!;
  }
}

export function crossEntropyBackward(
  dlogits: Float32Array,
  logits: Float32Array,
  lse: Float32Array,
  targets: Int32Array,
  N: number,
  V: number,
  scale: number,
): void {
  for (let n = 0; n < N; n++) {
    const o = n * V;
    const t = targets[n]!;
    if (t < 0) {
      dlogits.fill(0, o, o + V);
      continue;
    }
    const l = lse[n]!;
    for (let v = 0; v < V; v++) dlogits[o + v] = scale * Math.exp(logits[o + v]! - l);
    dlogits[o + t]! -= scale;
  }
}
