/** Layer norm, RMS norm and softmax over rows of C values, forward and backward. */
import { dot, hmax, hsum, madd, sexp, vexp } from "./simd";

// sum of x: [n]
function sum(x: usize, n: i32): f32 {
  let acc = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) acc = f32x4.add(acc, v128.load(x + (<usize>i << 2)));
  let s = hsum(acc);
  for (; i < n; i++) s += load<f32>(x + (<usize>i << 2));
  return s;
}

// x: [N, C] -> out: [N, C]; mean, rstd: [N]
export function layerNormForward(out: usize, mean: usize, rstd: usize, x: usize, w: usize, bias: usize, N: i32, C: i32, eps: f32): void {
  for (let n = 0; n < N; n++) {
    const xr = x + ((<usize>n * C) << 2);
    const or = out + ((<usize>n * C) << 2);
    const m = sum(xr, C) / <f32>C;
    const vm = f32x4.splat(m);
    let acc = f32x4.splat(0);
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const d = f32x4.sub(v128.load(xr + (<usize>c << 2)), vm);
      acc = madd(d, d, acc);
    }
    let v = hsum(acc);
    for (; c < C; c++) {
      const d = load<f32>(xr + (<usize>c << 2)) - m;
      v += d * d;
    }
    const s: f32 = 1 / Mathf.sqrt(v / <f32>C + eps);
    const vs = f32x4.splat(s);
    c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = <usize>c << 2;
      const xh = f32x4.mul(f32x4.sub(v128.load(xr + o), vm), vs);
      v128.store(or + o, madd(xh, v128.load(w + o), v128.load(bias + o)));
    }
    for (; c < C; c++) {
      const o = <usize>c << 2;
      store<f32>(or + o, (load<f32>(xr + o) - m) * s * load<f32>(w + o) + load<f32>(bias + o));
    }
    store<f32>(mean + (<usize>n << 2), m);
    store<f32>(rstd + (<usize>n << 2), s);
  }
}

// dx: [N, C] overwritten (0 = skip); dweight, dbias: [C] accumulate (0 = skip)
export function layerNormBackward(dx: usize, dw: usize, db: usize, dout: usize, x: usize, w: usize, mean: usize, rstd: usize, N: i32, C: i32): void {
  for (let n = 0; n < N; n++) {
    const xr = x + ((<usize>n * C) << 2);
    const gr = dout + ((<usize>n * C) << 2);
    const m = load<f32>(mean + (<usize>n << 2));
    const s = load<f32>(rstd + (<usize>n << 2));
    const vm = f32x4.splat(m);
    const vs = f32x4.splat(s);
    let adm = f32x4.splat(0);
    let admx = f32x4.splat(0);
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = <usize>c << 2;
      const xh = f32x4.mul(f32x4.sub(v128.load(xr + o), vm), vs);
      const g = v128.load(gr + o);
      const dn = f32x4.mul(g, v128.load(w + o));
      adm = f32x4.add(adm, dn);
      admx = madd(dn, xh, admx);
      if (dw) v128.store(dw + o, madd(g, xh, v128.load(dw + o)));
      if (db) v128.store(db + o, f32x4.add(g, v128.load(db + o)));
    }
    let dm = hsum(adm);
    let dmx = hsum(admx);
    for (; c < C; c++) {
      const o = <usize>c << 2;
      const xh = (load<f32>(xr + o) - m) * s;
      const g = load<f32>(gr + o);
      const dn = g * load<f32>(w + o);
      dm += dn;
      dmx += dn * xh;
      if (dw) store<f32>(dw + o, load<f32>(dw + o) + g * xh);
      if (db) store<f32>(db + o, load<f32>(db + o) + g);
    }
    dm /= <f32>C;
    dmx /= <f32>C;
    if (!dx) continue;
    const dr = dx + ((<usize>n * C) << 2);
    const vdm = f32x4.splat(dm);
    const vdmx = f32x4.splat(dmx);
    c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = <usize>c << 2;
      const xh = f32x4.mul(f32x4.sub(v128.load(xr + o), vm), vs);
      const dn = f32x4.mul(v128.load(gr + o), v128.load(w + o));
      v128.store(dr + o, f32x4.mul(vs, f32x4.sub(f32x4.sub(dn, vdm), f32x4.mul(xh, vdmx))));
    }
    for (; c < C; c++) {
      const o = <usize>c << 2;
      const xh = (load<f32>(xr + o) - m) * s;
      store<f32>(dr + o, s * (load<f32>(gr + o) * load<f32>(w + o) - dm - xh * dmx));
    }
  }
}

// x: [N, C] -> out: [N, C] = x * rstd * weight; rstd: [N]
export function rmsNormForward(out: usize, rstd: usize, x: usize, w: usize, N: i32, C: i32, eps: f32): void {
  for (let n = 0; n < N; n++) {
    const xr = x + ((<usize>n * C) << 2);
    const or = out + ((<usize>n * C) << 2);
    const s: f32 = 1 / Mathf.sqrt(dot(xr, xr, C) / <f32>C + eps);
    const vs = f32x4.splat(s);
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = <usize>c << 2;
      v128.store(or + o, f32x4.mul(f32x4.mul(v128.load(xr + o), vs), v128.load(w + o)));
    }
    for (; c < C; c++) store<f32>(or + (<usize>c << 2), load<f32>(xr + (<usize>c << 2)) * s * load<f32>(w + (<usize>c << 2)));
    store<f32>(rstd + (<usize>n << 2), s);
  }
}

export function rmsNormBackward(dx: usize, dw: usize, dout: usize, x: usize, w: usize, rstd: usize, N: i32, C: i32): void {
  for (let n = 0; n < N; n++) {
    const xr = x + ((<usize>n * C) << 2);
    const gr = dout + ((<usize>n * C) << 2);
    const s = load<f32>(rstd + (<usize>n << 2));
    const vs = f32x4.splat(s);
    let acc = f32x4.splat(0);
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = <usize>c << 2;
      const xh = f32x4.mul(v128.load(xr + o), vs);
      const g = v128.load(gr + o);
      acc = madd(f32x4.mul(g, v128.load(w + o)), xh, acc);
      if (dw) v128.store(dw + o, madd(g, xh, v128.load(dw + o)));
    }
    let dmx = hsum(acc);
    for (; c < C; c++) {
      const o = <usize>c << 2;
      const xh = load<f32>(xr + o) * s;
      const g = load<f32>(gr + o);
      dmx += g * load<f32>(w + o) * xh;
      if (dw) store<f32>(dw + o, load<f32>(dw + o) + g * xh);
    }
    dmx /= <f32>C;
    if (!dx) continue;
    const dr = dx + ((<usize>n * C) << 2);
    const k = f32x4.splat(s * dmx);
    c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = <usize>c << 2;
      const dn = f32x4.mul(v128.load(gr + o), v128.load(w + o));
      v128.store(dr + o, f32x4.mul(vs, f32x4.sub(dn, f32x4.mul(v128.load(xr + o), k))));
    }
    for (; c < C; c++) {
      const o = <usize>c << 2;
      store<f32>(dr + o, s * (load<f32>(gr + o) * load<f32>(w + o) - load<f32>(xr + o) * s * dmx));
    }
  }
}

// max of x: [n] (pmax: a NaN may be skipped here, but it still reaches the sum of exps)
export function rowMax(x: usize, n: i32): f32 {
  let acc = f32x4.splat(-Infinity);
  let i = 0;
  for (; i + 4 <= n; i += 4) acc = f32x4.pmax(acc, v128.load(x + (<usize>i << 2)));
  let m = hmax(acc);
  for (; i < n; i++) m = max(m, load<f32>(x + (<usize>i << 2)));
  return m;
}

// out: [n] = exp(x - mx) (out may be 0 to only sum); returns the sum
export function expShift(out: usize, x: usize, n: i32, mx: f32): f32 {
  const vm = f32x4.splat(mx);
  let acc = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const e = vexp(f32x4.sub(v128.load(x + (<usize>i << 2)), vm));
    if (out) v128.store(out + (<usize>i << 2), e);
    acc = f32x4.add(acc, e);
  }
  let s = hsum(acc);
  for (; i < n; i++) {
    const e = sexp(load<f32>(x + (<usize>i << 2)) - mx);
    if (out) store<f32>(out + (<usize>i << 2), e);
    s += e;
  }
  return s;
}

// x: [N, C] -> out: [N, C], softmax over C, rows [n0, n1)
export function softmaxForward(out: usize, x: usize, C: i32, n0: i32, n1: i32): void {
  for (let n = n0; n < n1; n++) {
    const xr = x + ((<usize>n * C) << 2);
    const or = out + ((<usize>n * C) << 2);
    const s = expShift(or, xr, C, rowMax(xr, C));
    const inv = f32x4.splat(1 / s);
    let c = 0;
    for (; c + 4 <= C; c += 4) v128.store(or + (<usize>c << 2), f32x4.mul(v128.load(or + (<usize>c << 2)), inv));
    for (; c < C; c++) store<f32>(or + (<usize>c << 2), load<f32>(or + (<usize>c << 2)) / s);
  }
}

// dx = y * (dout - dot(dout, y)), rows [n0, n1)
export function softmaxBackward(dx: usize, dout: usize, y: usize, C: i32, n0: i32, n1: i32): void {
  for (let n = n0; n < n1; n++) {
    const o0 = (<usize>n * C) << 2;
    const d = dot(dout + o0, y + o0, C);
    const vd = f32x4.splat(d);
    let c = 0;
    for (; c + 4 <= C; c += 4) {
      const o = o0 + (<usize>c << 2);
      v128.store(dx + o, f32x4.mul(v128.load(y + o), f32x4.sub(v128.load(dout + o), vd)));
    }
    for (; c < C; c++) {
      const o = o0 + (<usize>c << 2);
      store<f32>(dx + o, load<f32>(y + o) * (load<f32>(dout + o) - d));
    }
  }
}
