/**
 * Tensor: an f32 buffer with a row-major shape, plus autograd bookkeeping (requiresGrad, grad).
 * Which op produced a tensor is tracked by the autograd tape, not here, so data flows one way.
 */
import type { Rng } from "./random.js";
import { check, numel, type Shape, ShapeError, shapeStr } from "./shape.js";

export class Tensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];
  /** True for trainable leaves and for every result computed from one while grad mode is on. */
  requiresGrad: boolean;
  /** Accumulated gradient of a leaf that requires grad; null until backward reaches it. */
  grad: Float32Array | null = null;

  constructor(data: Float32Array, shape: Shape, requiresGrad = false) {
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new ShapeError(`invalid shape ${shapeStr(shape)}`);
    }
    check(
      data.length === numel(shape),
      () => `tensor data holds ${data.length} values but shape ${shapeStr(shape)} needs ${numel(shape)}`,
    );
    this.data = data;
    this.shape = [...shape];
    this.requiresGrad = requiresGrad;
  }

  get size(): number {
    return this.data.length;
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** The single value of a one-element tensor. */
  item(): number {
    check(this.size === 1, () => `item() needs one element, tensor has shape ${shapeStr(this.shape)}`);
    return this.data[0]!;
  }

  toArray(): number[] {
    return Array.from(this.data);
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

  /** A leaf copy that shares no storage and carries no graph. */
  clone(requiresGrad = this.requiresGrad): Tensor {
    return new Tensor(this.data.slice(), this.shape, requiresGrad);
  }
}
