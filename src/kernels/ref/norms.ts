/** Reference layer norm, RMS norm and softmax, forward and backward. Rows of C values. */

export function layerNormForward(
  out: Float32Array,
  mean: Float32Array,
  rstd: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  bias: Float32Array,
  N: number,
  C: number,
  eps: number,
): void {
  for (let n = 0; n < N; n++) {
    const o = n * C;
    let m = 0;
    for (let c = 0; c < C; c++) m += x[o + c]!;
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[o + c]! - m) ** 2;
    const s = 1 / Math.sqrt(v / C + eps);
    for (let c = 0; c < C; c++) out[o + c] = (x[o + c]! - m) * s * weight[c]! + bias[c]!;
    mean[n] = m;
    rstd[n] = s;
  }
}

export function layerNormBackward(
  dx: Float32Array | null,
  dweight: Float32Array | null,
  dbias: Float32Array | null,
  dout: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  mean: Float32Array,
  rstd: Float32Array,
  N: number,
  C: number,
): void {
  for (let n = 0; n < N; n++) {
    const o = n * C;
    const m = mean[n]!;
    const s = rstd[n]!;
    // dnorm = dout * weight; dx = s * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat))
    let dm = 0;
    let dmx = 0;
    for (let c = 0; c < C; c++) {
      const xhat = (x[o + c]! - m) * s;
      const dn = dout[o + c]! * weight[c]!;
      dm += dn;
      dmx += dn * xhat;
      if (dweight) dweight[c]! += dout[o + c]! * xhat;
      if (dbias) dbias[c]! += dout[o + c]!;
    }
    dm /= C;
    dmx /= C;
    if (dx) {
      for (let c = 0; c < C; c++) {
        const xhat = (x[o + c]! - m) * s;
        dx[o + c] = s * (dout[o + c]! * weight[c]! - dm - xhat * dmx);
      }
    }
  }
}

export function rmsNormForward(
  out: Float32Array,
  rstd: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  N: number,
  C: number,
  eps: number,
): void {
  for (let n = 0; n < N; n++) {
    const o = n * C;
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[o + c]! * x[o + c]!;
    const s = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) out[o + c] = x[o + c]! * s * weight[c]!;
    rstd[n] = s;
  }
}

export function rmsNormBackward(
  dx: Float32Array | null,
  dweight: Float32Array | null,
  dout: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  rstd: Float32Array,
  N: number,
  C: number,
): void {
  for (let n = 0; n < N; n++) {
    const o = n * C;
    const s = rstd[n]!;
    // dx = s * (dn - xhat * mean(dn * xhat)), dn = dout * weight
    let dmx = 0;
    for (let c = 0; c < C; c++) {
      const xhat = x[o + c]! * s;
      dmx += dout[o + c]! * weight[c]! * xhat;
      if (dweight) dweight[c]! += dout[o + c]! * xhat;
    }
    dmx /= C;
    if (dx) for (let c = 0; c < C; c++) dx[o + c] = s * (dout[o + c]! * weight[c]! - x[o + c]! * s * dmx);
  }
}

export function softmaxForward(out: Float32Array, x: Float32Array, N: number, C: number): void {
  for (let n = 0; n < N; n++) {
    const o = n * C;
    let mx = -Infinity;
    for (let c = 0; c < C; c++) mx = Math.max(mx, x[o + c]!);
    let sum = 0;
    for (let c = 0; c < C; c++) {
      const e = Math.exp(x[o + c]! - mx);
      out[o + c] = e;
      sum += e;
    }
    for (let c = 0; c < C; c++) out[o + c]! /= sum;
  }
}

export function softmaxBackward(dx: Float32Array, dout: Float32Array, y: Float32Array, N: number, C: number) {
  for (let n = 0; n < N; n++) {
    const o = n * C;
    let dot = 0;
    for (let c = 0; c < C; c++) dot += dout[o + c]! * y[o + c]!;
    for (let c = 0; c < C; c++) dx[o + c] = y[o + c]! * (dout[o + c]! - dot);
  }
}
