/**
 * Tensor: an f32 buffer with a row-major shape, plus autograd bookkeeping (requiresGrad, grad).
 * Which op produced a tensor is tracked by the autograd tape, not here, so data flows one way.
 *
 * A frozen base weight may instead hold its values in 16 bits (`half`, see `--base-dtype`), with no
 * f32 copy: that is the point, half the memory. Only matmul (as the weight operand) and embedding read
 * one, through `weights()`; `data` refuses, and such a tensor never requires grad.
 */
import { float32ToHalf, type HalfBits, type HalfDType, halfToFloat32 } from "./dtype.js";
import type { Rng } from "./random.js";
import { check, numel, type Shape, ShapeError, shapeStr } from "./shape.js";

/** How a tensor stores its values. */
export type TensorDType = "f32" | HalfDType;

export class Tensor {
  readonly shape: readonly number[];
  readonly size: number;
  /** The 16-bit values of a frozen weight; null for an f32 tensor. */
  readonly half: HalfBits | null;
  /** Accumulated gradient of a leaf that requires grad; null until backward reaches it. */
  grad: Float32Array | null = null;
  private readonly f32: Float32Array | null;
  private grads: boolean;

  constructor(data: Float32Array | HalfBits, shape: Shape, requiresGrad = false) {
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new ShapeError(`invalid shape ${shapeStr(shape)}`);
    }
    const isF32 = data instanceof Float32Array;
    const length = isF32 ? data.length : data.bits.length;
    check(
      length === numel(shape),
      () => `tensor data holds ${length} values but shape ${shapeStr(shape)} needs ${numel(shape)}`,
    );
    this.f32 = isF32 ? data : null;
    this.half = isF32 ? null : data;
    this.shape = [...shape];
    this.size = length;
    this.grads = false;
    this.requiresGrad = requiresGrad;
  }

  /** The f32 values. Throws for a 16-bit tensor, which has none (use `weights()` or `toFloat32()`). */
  get data(): Float32Array {
    if (this.f32) return this.f32;
    throw new Error(
      `this tensor ${shapeStr(this.shape)} is stored as ${this.dtype} (a frozen base weight, --base-dtype ${this.dtype}) and holds no f32 values; only matmul (as the weight) and embedding read it. Call toFloat32() for an f32 copy, or load the model with --base-dtype f32`,
    );
  }

  /** The values as a kernel weight operand: the f32 data, or the 16-bit bits. */
  weights(): Float32Array | HalfBits {
    return this.f32 ?? this.half!;
  }

  get dtype(): TensorDType {
    return this.half ? this.half.dtype : "f32";
  }

  /** Bytes of value storage (4 per f32 element, 2 per 16-bit one). */
  get byteLength(): number {
    return this.half ? this.half.bits.byteLength : this.f32!.byteLength;
  }

  /** True for trainable leaves and for every result computed from one while grad mode is on. */
  get requiresGrad(): boolean {
    return this.grads;
  }

  set requiresGrad(value: boolean) {
    if (value && this.half) {
      throw new Error(
        `a ${this.dtype} tensor ${shapeStr(this.shape)} cannot require grad: 16-bit tensors are frozen base weights (--base-dtype). Convert it with toFloat32() to train it, or load the model with --base-dtype f32 (as --full needs)`,
      );
    }
    this.grads = value;
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** The single value of a one-element tensor. */
  item(): number {
    check(this.size === 1, () => `item() needs one element, tensor has shape ${shapeStr(this.shape)}`);
    return this.values()[0]!;
  }

  toArray(): number[] {
    return Array.from(this.values());
  }

  /** An f32 copy (16-bit values decoded exactly): a frozen leaf that shares no storage. */
  toFloat32(): Tensor {
    return new Tensor(this.half ? halfToFloat32(this.half) : this.f32!.slice(), this.shape);
  }

  /** A frozen 16-bit copy, rounded to nearest even (f16 overflows to ±Inf). */
  toHalf(dtype: HalfDType): Tensor {
    if (this.half?.dtype === dtype) return new Tensor({ dtype, bits: this.half.bits.slice() }, this.shape);
    return new Tensor({ dtype, bits: float32ToHalf(this.values(), dtype) }, this.shape);
  }

  /** Overwrites every value in place, rounding to this tensor's dtype (tied tensors see the change). */
  assign(values: Float32Array): void {
    check(
      values.length === this.size,
      () => `assign: ${values.length} values for a tensor of shape ${shapeStr(this.shape)}`,
    );
    if (this.half) this.half.bits.set(float32ToHalf(values, this.half.dtype));
    else this.f32!.set(values);
  }

  // the f32 data, or a decoded copy of 16-bit values
  private values(): Float32Array {
    return this.half ? halfToFloat32(this.half) : this.f32!;
  }

  static from(values: ArrayLike<number>, shape: Shape = [values.length], requiresGrad = false): Tensor {
    return new Tensor(Float32Array.from(values), shape, requiresGrad);
  }

  static zeros(shape: Shape, requiresGrad = false): Tensor {
    return new Tensor(new Float32Array(numel(shape)), shape, requiresGrad);
  }

  static full(shape: Shape, value: number, requiresGrad = false): Tensor {
    return new Tensor(new Float32Array(numel(shape)).fill(value), shape, requiresGrad);
  }

  static randn(shape: Shape, rng: Rng, std = 1, requiresGrad = false): Tensor {
    const d = new Float32Array(numel(shape));
    for (let i = 0; i < d.length; i++) d[i] = rng.normal() * std;
    return new Tensor(d, shape, requiresGrad);
  }

  static uniform(shape: Shape, rng: Rng, low: number, high: number, requiresGrad = false): Tensor {
    const d = new Float32Array(numel(shape));
    for (let i = 0; i < d.length; i++) d[i] = low + (high - low) * rng.uniform();
    return new Tensor(d, shape, requiresGrad);
  }

  /** A leaf copy that shares no storage and carries no graph (a 16-bit tensor stays 16-bit). */
  clone(requiresGrad = this.requiresGrad): Tensor {
    const copy = this.half ? { dtype: this.half.dtype, bits: this.half.bits.slice() } : this.f32!.slice();
    return new Tensor(copy, this.shape, requiresGrad);
  }
}
