/** Elementwise and broadcast kernels: binary add/mul, sumTo, scale, GELU (tanh form), SiLU, soft-capping. */
import { hsum, madd, vexp, vtanh } from "./simd";

// out: [outer..., n] = a op b; the outer dims (nd of them) iterate by odometer over shape/aStr/bStr
// (i32 arrays at the given pointers, in elements); the inner dim has strides sa, sb (0 or 1 fast)
export function binary(
  mul: bool,
  out: usize,
  a: usize,
  b: usize,
  nd: i32,
  shape: usize,
  aStr: usize,
  bStr: usize,
  idx: usize,
  n: i32,
  sa: i32,
  sb: i32,
): void {
  let outer = 1;
  for (let d = 0; d < nd; d++) {
    outer *= load<i32>(shape + (<usize>d << 2));
    store<i32>(idx + (<usize>d << 2), 0);
  }
  let ia = 0;
  let ib = 0;
  for (let r = 0; r < outer; r++) {
    const o = out + ((<usize>r * n) << 2);
    const pa = a + (<usize>ia << 2);
    const pb = b + (<usize>ib << 2);
    let j = 0;
    if (sa == 1 && sb == 1) {
      for (; j + 4 <= n; j += 4) {
        const x = v128.load(pa + (<usize>j << 2));
        const y = v128.load(pb + (<usize>j << 2));
        v128.store(o + (<usize>j << 2), mul ? f32x4.mul(x, y) : f32x4.add(x, y));
      }
    } else if (sa == 1 && sb == 0) {
      const y = v128.load32_splat(pb);
      for (; j + 4 <= n; j += 4) {
        const x = v128.load(pa + (<usize>j << 2));
        v128.store(o + (<usize>j << 2), mul ? f32x4.mul(x, y) : f32x4.add(x, y));
      }
    } else if (sa == 0 && sb == 1) {
      const x = v128.load32_splat(pa);
      for (; j + 4 <= n; j += 4) {
        const y = v128.load(pb + (<usize>j << 2));
        v128.store(o + (<usize>j << 2), mul ? f32x4.mul(x, y) : f32x4.add(x, y));
      }
    }
    for (; j < n; j++) {
      const x = load<f32>(pa + (<usize>(j * sa) << 2));
      const y = load<f32>(pb + (<usize>(j * sb) << 2));
      store<f32>(o + (<usize>j << 2), mul ? x * y : x + y);
    }
    // odometer over the outer dims
    for (let d = nd - 1; d >= 0; d--) {
      const q = idx + (<usize>d << 2);
      const s = load<i32>(shape + (<usize>d << 2));
      const da = load<i32>(aStr + (<usize>d << 2));
      const db = load<i32>(bStr + (<usize>d << 2));
      const v = load<i32>(q) + 1;
      ia += da;
      ib += db;
      if (v < s) {
        store<i32>(q, v);
        break;
      }
      store<i32>(q, 0);
      ia -= da * s;
      ib -= db * s;
    }
  }
}

// out (zeroed first) += g: [outer..., n] summed where the out strides are 0; inner out stride so (0 or 1 fast)
export function sumTo(out: usize, outLen: i32, g: usize, nd: i32, shape: usize, oStr: usize, idx: usize, n: i32, so: i32): void {
  memory.fill(out, 0, <usize>outLen << 2);
  let outer = 1;
  for (let d = 0; d < nd; d++) {
    outer *= load<i32>(shape + (<usize>d << 2));
    store<i32>(idx + (<usize>d << 2), 0);
  }
  let io = 0;
  for (let r = 0; r < outer; r++) {
    const pg = g + ((<usize>r * n) << 2);
    const po = out + (<usize>io << 2);
    let j = 0;
    if (so == 1) {
      for (; j + 4 <= n; j += 4) {
        const q = po + (<usize>j << 2);
        v128.store(q, f32x4.add(v128.load(q), v128.load(pg + (<usize>j << 2))));
      }
      for (; j < n; j++) store<f32>(po + (<usize>j << 2), load<f32>(po + (<usize>j << 2)) + load<f32>(pg + (<usize>j << 2)));
    } else if (so == 0) {
      let acc = f32x4.splat(0);
      for (; j + 4 <= n; j += 4) acc = f32x4.add(acc, v128.load(pg + (<usize>j << 2)));
      let s = hsum(acc);
      for (; j < n; j++) s += load<f32>(pg + (<usize>j << 2));
      store<f32>(po, load<f32>(po) + s);
    } else {
      for (; j < n; j++) {
        const q = po + (<usize>(j * so) << 2);
        store<f32>(q, load<f32>(q) + load<f32>(pg + (<usize>j << 2)));
      }
    }
    for (let d = nd - 1; d >= 0; d--) {
      const q = idx + (<usize>d << 2);
      const s = load<i32>(shape + (<usize>d << 2));
      const dd = load<i32>(oStr + (<usize>d << 2));
      const v = load<i32>(q) + 1;
      io += dd;
      if (v < s) {
        store<i32>(q, v);
        break;
      }
      store<i32>(q, 0);
      io -= dd * s;
    }
  }
}

// out: [n] = s * x: [n]
export function scale(out: usize, x: usize, n: i32, s: f32): void {
  const vs = f32x4.splat(s);
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(out + (<usize>i << 2), f32x4.mul(vs, v128.load(x + (<usize>i << 2))));
  for (; i < n; i++) store<f32>(out + (<usize>i << 2), s * load<f32>(x + (<usize>i << 2)));
}

const GELU_K: f32 = 0.7978845608028654; // sqrt(2 / pi)
const GELU_C: f32 = 0.044715;

// sigmoid(2u), u = k (x + c x^3): since 0.5 (1 + tanh(u)) = sigmoid(2u), this is the GELU gate
// @ts-ignore: decorator
@inline
function geluGate4(x: v128): v128 {
  const x3 = f32x4.mul(f32x4.mul(x, x), x);
  const u2 = f32x4.mul(f32x4.splat(-2 * GELU_K), madd(f32x4.splat(GELU_C), x3, x));
  return f32x4.div(f32x4.splat(1), f32x4.add(f32x4.splat(1), vexp(u2)));
}

// gelu(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), four lanes
// @ts-ignore: decorator
@inline
function gelu4(x: v128): v128 {
  return f32x4.mul(x, geluGate4(x));
}

// dout * gelu'(x) = dout * (s + x * 2 s (1 - s) * k (1 + 3c x^2)), s = sigmoid(2u) (1 - tanh^2 = 4 s (1 - s))
// @ts-ignore: decorator
@inline
function geluGrad4(dout: v128, x: v128): v128 {
  const s = geluGate4(x);
  const one = f32x4.splat(1);
  const du = f32x4.mul(f32x4.splat(2 * GELU_K), madd(f32x4.splat(3 * GELU_C), f32x4.mul(x, x), one));
  return f32x4.mul(dout, madd(f32x4.mul(f32x4.mul(x, s), f32x4.sub(one, s)), du, s));
}

// x * sigmoid(x), four lanes
// @ts-ignore: decorator
@inline
function silu4(x: v128): v128 {
  return f32x4.div(x, f32x4.add(f32x4.splat(1), vexp(f32x4.neg(x))));
}

// dout * s (1 + x (1 - s)), s = sigmoid(x)
// @ts-ignore: decorator
@inline
function siluGrad4(dout: v128, x: v128): v128 {
  const one = f32x4.splat(1);
  const s = f32x4.div(one, f32x4.add(one, vexp(f32x4.neg(x))));
  return f32x4.mul(f32x4.mul(dout, s), madd(x, f32x4.sub(one, s), one));
}

// x: [n] -> out: [n]; tails go through one padded lane group so they round like the body
export function geluForward(out: usize, x: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(out + (<usize>i << 2), gelu4(v128.load(x + (<usize>i << 2))));
  for (; i < n; i++) store<f32>(out + (<usize>i << 2), f32x4.extract_lane(gelu4(v128.load32_splat(x + (<usize>i << 2))), 0));
}

export function geluBackward(dx: usize, dout: usize, x: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(dx + o, geluGrad4(v128.load(dout + o), v128.load(x + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(dx + o, f32x4.extract_lane(geluGrad4(v128.load32_splat(dout + o), v128.load32_splat(x + o)), 0));
  }
}

export function siluForward(out: usize, x: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(out + (<usize>i << 2), silu4(v128.load(x + (<usize>i << 2))));
  for (; i < n; i++) store<f32>(out + (<usize>i << 2), f32x4.extract_lane(silu4(v128.load32_splat(x + (<usize>i << 2))), 0));
}

export function siluBackward(dx: usize, dout: usize, x: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(dx + o, siluGrad4(v128.load(dout + o), v128.load(x + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(dx + o, f32x4.extract_lane(siluGrad4(v128.load32_splat(dout + o), v128.load32_splat(x + o)), 0));
  }
}

// out = cap tanh(x / cap), four lanes (tails through one padded lane group, as the body rounds)
// @ts-ignore: decorator
@inline
function softcap4(x: v128, cap: f32): v128 {
  return f32x4.mul(f32x4.splat(cap), vtanh(f32x4.mul(x, f32x4.splat(1 / cap))));
}

export function softcapForward(out: usize, x: usize, n: i32, cap: f32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(out + (<usize>i << 2), softcap4(v128.load(x + (<usize>i << 2)), cap));
  for (; i < n; i++) store<f32>(out + (<usize>i << 2), f32x4.extract_lane(softcap4(v128.load32_splat(x + (<usize>i << 2)), cap), 0));
}

// dx = dout (1 - t^2), t = y / cap from the forward output y
export function softcapBackward(dx: usize, dout: usize, y: usize, n: i32, cap: f32): void {
  const inv = f32x4.splat(1 / cap);
  const one = f32x4.splat(1);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const t = f32x4.mul(v128.load(y + o), inv);
    v128.store(dx + o, f32x4.mul(v128.load(dout + o), f32x4.sub(one, f32x4.mul(t, t))));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const t = load<f32>(y + o) * (1 / cap);
    store<f32>(dx + o, load<f32>(dout + o) * (1 - t * t));
  }
}
