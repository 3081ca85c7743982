/**
 * Vector helpers shared by every kernel. RELAXED is a compile-time constant (asc --use RELAXED=0|1):
 * the relaxed build uses f32x4.relaxed_madd (a fused multiply-add where the engine has one), the
 * plain build mul+add. Pointers are byte offsets into the one linear memory.
 */

// a * b + c, four lanes
// @ts-ignore: decorator
@inline
export function madd(a: v128, b: v128, c: v128): v128 {
  if (RELAXED) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

// sum of the four lanes
// @ts-ignore: decorator
@inline
export function hsum(v: v128): f32 {
  return (
    f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3))
  );
}

// @ts-ignore: decorator
@inline
export function hmax(v: v128): f32 {
  return max(max(f32x4.extract_lane(v, 0), f32x4.extract_lane(v, 1)), max(f32x4.extract_lane(v, 2), f32x4.extract_lane(v, 3)));
}

// exp(x) per lane: Cephes expf polynomial (about 1 ulp) on x clamped to [-87.33, 88.37], so it
// saturates at about 1.2e-38 and 2.4e38 instead of reaching 0 and inf; NaN stays NaN. Built from
// cheap ops only: pmin/pmax (not min/max, which V8 expands for NaN rules), and the 1.5 * 2^23 trick
// for round-to-integer, which also yields the integer in the low mantissa bits (no trunc_sat).
// @ts-ignore: decorator
@inline
export function vexp(x: v128): v128 {
  const magic = f32x4.splat(12582912.0);
  const xc = f32x4.pmin(f32x4.pmax(x, f32x4.splat(-87.3365478515625)), f32x4.splat(88.3762626647949));
  const t = madd(xc, f32x4.splat(1.44269504088896341), magic);
  const n = f32x4.sub(t, magic);
  let r = madd(n, f32x4.splat(-0.693359375), xc);
  r = madd(n, f32x4.splat(2.12194440e-4), r);
  let p = f32x4.splat(1.9875691500e-4);
  p = madd(p, r, f32x4.splat(1.3981999507e-3));
  p = madd(p, r, f32x4.splat(8.3334519073e-3));
  p = madd(p, r, f32x4.splat(4.1665795894e-2));
  p = madd(p, r, f32x4.splat(1.6666665459e-1));
  p = madd(p, r, f32x4.splat(5.0000001201e-1));
  const y = f32x4.add(madd(p, f32x4.mul(r, r), r), f32x4.splat(1.0));
  // 2^n: n sits in the low bits of t (t = 1.5 * 2^23 + n), so bits(t) - bits(magic) = n
  const pow2n = i32x4.shl(i32x4.add(i32x4.sub(t, magic), i32x4.splat(127)), 23);
  return f32x4.mul(y, pow2n);
}

// tanh(x) per lane: odd Taylor polynomial to x^9 where |x| < 0.25 (relative error under 1e-8 there),
// else sign(x) (1 - 2 / (exp(2|x|) + 1)), which saturates to ±1 and keeps NaN
// @ts-ignore: decorator
@inline
export function vtanh(x: v128): v128 {
  const a = f32x4.abs(x);
  const x2 = f32x4.mul(x, x);
  let p = f32x4.splat(0.021869488536155203); // 62/2835
  p = madd(p, x2, f32x4.splat(-0.05396825396825397)); // -17/315
  p = madd(p, x2, f32x4.splat(0.13333333333333333)); // 2/15
  p = madd(p, x2, f32x4.splat(-0.3333333333333333));
  const small = madd(f32x4.mul(p, x2), x, x);
  const one = f32x4.splat(1);
  const big = f32x4.sub(one, f32x4.div(f32x4.splat(2), f32x4.add(vexp(f32x4.add(a, a)), one)));
  // copy x's sign onto big (|big| is in [0, 1], so its own sign bit is clear)
  const signed = v128.or(big, v128.and(x, f32x4.splat(-0.0)));
  return v128.bitselect(small, signed, f32x4.lt(a, f32x4.splat(0.25)));
}

// scalar exp through the vector path, so scalar tails round like the vector body
export function sexp(x: f32): f32 {
  return f32x4.extract_lane(vexp(f32x4.splat(x)), 0);
}

// x: [n] . y: [n]
export function dot(x: usize, y: usize, n: i32): f32 {
  let acc0 = f32x4.splat(0);
  let acc1 = f32x4.splat(0);
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const o = <usize>i << 2;
    acc0 = madd(v128.load(x + o), v128.load(y + o), acc0);
    acc1 = madd(v128.load(x + o, 16), v128.load(y + o, 16), acc1);
  }
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    acc0 = madd(v128.load(x + o), v128.load(y + o), acc0);
  }
  let s = hsum(f32x4.add(acc0, acc1));
  for (; i < n; i++) s += load<f32>(x + (<usize>i << 2)) * load<f32>(y + (<usize>i << 2));
  return s;
}

// y: [n] += a * x: [n]
export function axpy(y: usize, a: f32, x: usize, n: i32): void {
  const va = f32x4.splat(a);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, madd(va, v128.load(x + o), v128.load(y + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(y + o, load<f32>(y + o) + a * load<f32>(x + o));
  }
}

// x: [n] -> 0
export function zero(x: usize, n: i32): void {
  memory.fill(x, 0, <usize>n << 2);
}
