/**
 * Optimizers (SGD, Adam, AdamW) with PyTorch semantics, and gradient-norm clipping.
 *
 * State is held only for the trainable parameters (requiresGrad at construction), keyed by
 * parameter name, so a checkpoint of it can be checked against the model when it is loaded.
 * Pure and browser-safe: the numeric work runs in plain loops or behind the kernel backend.
 */
import { backend } from "../kernels/index.js";
import type { Tensor } from "../tensor/tensor.js";

export type OptimizerKind = "sgd" | "adam" | "adamw";
export const OPTIMIZERS: readonly OptimizerKind[] = ["sgd", "adam", "adamw"];

export interface OptimizerOptions {
  lr: number;
  /** L2 penalty added to the gradient (sgd, adam) or decoupled decay (adamw). */
  weightDecay?: number;
  /** SGD only. */
  momentum?: number;
  /** Adam / AdamW only. */
  beta1?: number;
  beta2?: number;
  eps?: number;
}

export type OptimizerState = {
  kind: OptimizerKind;
  /** Steps taken so far. */
  step: number;
  /** Per parameter name, its buffers: "m" and "v" (adam, adamw) or "momentum" (sgd with momentum). */
  buffers: Record<string, Record<string, Float32Array>>;
};

export interface Optimizer {
  readonly kind: OptimizerKind;
  /** The trainable parameters it updates (the frozen ones it was given are left out). */
  readonly params: [string, Tensor][];
  /** Learning rate of the next step; a schedule sets it before each step. */
  lr: number;
  /** Steps taken so far (the Adam bias correction of the next step uses steps + 1). */
  readonly steps: number;
  /** One update of every parameter that has a gradient (one whose grad is null is skipped). */
  step(): void;
  /** Drops the gradients (sets grad to null, as torch's set_to_none). */
  zeroGrad(): void;
  /** A copy of the state: later steps do not change it. */
  stateDict(): OptimizerState;
  /** Restores a stateDict(); throws listing every problem, and changes nothing, when it does not fit. */
  loadStateDict(s: OptimizerState): void;
}

const NO_TRAINABLE = "no trainable parameters: did you apply LoRA or unfreeze the model?";

function checkNumber(name: string, value: number, ok: (v: number) => boolean, want: string): void {
  if (typeof value !== "number" || !Number.isFinite(value) || !ok(value)) {
    throw new Error(`optimizer: ${name} must be ${want}, got ${value}`);
  }
}

abstract class BaseOptimizer implements Optimizer {
  abstract readonly kind: OptimizerKind;
  readonly params: [string, Tensor][];
  lr: number;
  readonly weightDecay: number;
  protected stepCount = 0;
  /** Per parameter index, its buffers by name (all allocated up front, zero-filled). */
  protected readonly buffers: Record<string, Float32Array>[];

  constructor(
    params: [string, Tensor][],
    opts: OptimizerOptions,
    defaultWeightDecay: number,
    bufferNames: string[],
  ) {
    const trainable = params.filter(([, p]) => p.requiresGrad);
    if (trainable.length === 0) throw new Error(NO_TRAINABLE);
    const names = new Set<string>();
    const tensors = new Set<Tensor>();
    for (const [name, p] of trainable) {
      if (names.has(name)) throw new Error(`optimizer: parameter name "${name}" is given twice`);
      if (tensors.has(p))
        throw new Error(`optimizer: the tensor of "${name}" is given twice (under another name)`);
      names.add(name);
      tensors.add(p);
    }
    checkNumber("lr", opts.lr, (v) => v >= 0, "a finite number >= 0");
    const wd = opts.weightDecay ?? defaultWeightDecay;
    checkNumber("weightDecay", wd, (v) => v >= 0, "a finite number >= 0");
    this.params = trainable.map(([n, p]) => [n, p]);
    this.lr = opts.lr;
    this.weightDecay = wd;
    this.buffers = trainable.map(([, p]) => {
      const b: Record<string, Float32Array> = {};
      for (const name of bufferNames) b[name] = new Float32Array(p.size);
      return b;
    });
  }

  get steps(): number {
    return this.stepCount;
  }

  step(): void {
    checkNumber("lr", this.lr, (v) => v >= 0, "a finite number >= 0");
    this.stepCount++;
    for (let i = 0; i < this.params.length; i++) {
      const [name, p] = this.params[i]!;
      const g = p.grad;
      if (g === null) continue;
      if (g.length !== p.data.length) {
        throw new Error(
          `optimizer: grad of "${name}" holds ${g.length} values, the parameter ${p.data.length}`,
        );
      }
      this.update(p.data, g, this.buffers[i]!);
    }
  }

  protected abstract update(p: Float32Array, g: Float32Array, buffers: Record<string, Float32Array>): void;

  zeroGrad(): void {
    for (const [, p] of this.params) p.grad = null;
  }

  stateDict(): OptimizerState {
    const buffers: OptimizerState["buffers"] = {};
    this.params.forEach(([name], i) => {
      const own = this.buffers[i]!;
      const copy: Record<string, Float32Array> = {};
      for (const key of Object.keys(own)) copy[key] = own[key]!.slice();
      buffers[name] = copy;
    });
    return { kind: this.kind, step: this.stepCount, buffers };
  }

  loadStateDict(s: OptimizerState): void {
    const problems: string[] = [];
    if (s.kind !== this.kind)
      problems.push(`state was saved by optimizer "${s.kind}", this one is "${this.kind}"`);
    if (!Number.isInteger(s.step) || s.step < 0) problems.push(`step must be an integer >= 0, got ${s.step}`);
    const given = s.buffers ?? {};
    const known = new Set<string>();
    this.params.forEach(([name, p], i) => {
      known.add(name);
      const own = this.buffers[i]!;
      const theirs = Object.hasOwn(given, name) ? given[name]! : {};
      for (const key of Object.keys(own)) {
        if (!Object.hasOwn(theirs, key)) {
          problems.push(`missing buffer "${key}" of parameter "${name}" (${p.size} values)`);
          continue;
        }
        const buf = theirs[key];
        if (!(buf instanceof Float32Array))
          problems.push(`buffer "${key}" of parameter "${name}" is not a Float32Array`);
        else if (buf.length !== p.size) {
          problems.push(
            `buffer "${key}" of parameter "${name}" holds ${buf.length} values, expected ${p.size}`,
          );
        }
      }
      for (const key of Object.keys(theirs)) {
        if (!Object.hasOwn(own, key)) problems.push(`extra buffer "${key}" of parameter "${name}"`);
      }
    });
    for (const name of Object.keys(given)) {
      if (!known.has(name)) {
        const keys = Object.keys(given[name] ?? {});
        problems.push(
          `extra parameter "${name}"${keys.length ? ` (buffers ${keys.map((k) => `"${k}"`).join(", ")})` : ""}: not trainable here`,
        );
      }
    }
    if (problems.length > 0) {
      throw new Error(
        `optimizer state does not fit the parameters (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n  ${problems.join("\n  ")}`,
      );
    }
    this.params.forEach(([name], i) => {
      const own = this.buffers[i]!;
      for (const key of Object.keys(own)) own[key]!.set(given[name]![key]!);
    });
    this.stepCount = s.step;
  }
}

/** torch.optim.SGD (no dampening, no Nesterov): g += wd·p; buf = momentum·buf + g; p -= lr·buf. */
class SGD extends BaseOptimizer {
  readonly kind = "sgd" as const;
  readonly momentum: number;

  constructor(params: [string, Tensor][], opts: OptimizerOptions) {
    const momentum = opts.momentum ?? 0;
    checkNumber("momentum", momentum, (v) => v >= 0, "a finite number >= 0");
    super(params, opts, 0, momentum > 0 ? ["momentum"] : []);
    this.momentum = momentum;
  }

  protected update(p: Float32Array, g: Float32Array, buffers: Record<string, Float32Array>): void {
    const { lr, weightDecay: wd, momentum } = this;
    const buf = buffers.momentum;
    if (wd === 0 && !buf) {
      // Exactly p - lr·g, rounded once to f32.
      for (let i = 0; i < p.length; i++) p[i] = p[i]! - lr * g[i]!;
      return;
    }
    for (let i = 0; i < p.length; i++) {
      let d = wd === 0 ? g[i]! : Math.fround(g[i]! + wd * p[i]!);
      // The buffer starts at zero, so the first step gives buf = g exactly (as torch's clone).
      if (buf) {
        buf[i] = momentum * buf[i]! + d;
        d = buf[i]!;
      }
      p[i] = p[i]! - lr * d;
    }
  }
}

/** torch.optim.Adam (wd is an L2 term added to the gradient) or AdamW (decoupled decay). */
class Adam extends BaseOptimizer {
  readonly kind: "adam" | "adamw";
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  private scratch: Float32Array | null = null;

  constructor(kind: "adam" | "adamw", params: [string, Tensor][], opts: OptimizerOptions) {
    super(params, opts, kind === "adamw" ? 0.01 : 0, ["m", "v"]);
    this.kind = kind;
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    checkNumber("beta1", this.beta1, (v) => v >= 0 && v < 1, "in [0, 1)");
    checkNumber("beta2", this.beta2, (v) => v >= 0 && v < 1, "in [0, 1)");
    checkNumber("eps", this.eps, (v) => v >= 0, "a finite number >= 0");
  }

  protected update(p: Float32Array, g: Float32Array, buffers: Record<string, Float32Array>): void {
    const { lr, beta1, beta2, eps, weightDecay } = this;
    const step = this.stepCount;
    if (this.kind === "adamw") {
      backend().adamw(p, g, buffers.m!, buffers.v!, { lr, beta1, beta2, eps, weightDecay, step });
      return;
    }
    let grad = g;
    if (weightDecay !== 0) {
      if (!this.scratch || this.scratch.length < p.length) this.scratch = new Float32Array(p.length);
      grad = this.scratch.subarray(0, p.length);
      for (let i = 0; i < p.length; i++) grad[i] = g[i]! + weightDecay * p[i]!;
    }
    backend().adamw(p, grad, buffers.m!, buffers.v!, { lr, beta1, beta2, eps, weightDecay: 0, step });
  }
}

/**
 * An optimizer over the trainable ones of `params` (named, as module.trainableParameters() gives
 * them). Defaults as torch: beta1 0.9, beta2 0.999, eps 1e-8, momentum 0, weightDecay 0 (sgd,
 * adam) or 0.01 (adamw). Options that do not apply to the kind are ignored.
 */
export function createOptimizer(
  kind: OptimizerKind,
  params: [string, Tensor][],
  opts: OptimizerOptions,
): Optimizer {
  switch (kind) {
    case "sgd":
      return new SGD(params, opts);
    case "adam":
    case "adamw":
      return new Adam(kind, params, opts);
    default:
      throw new Error(`unknown optimizer "${String(kind)}"; available: ${OPTIMIZERS.join(", ")}`);
  }
}

/**
 * torch.nn.utils.clip_grad_norm_: the L2 norm over all gradients (in float64; null grads count
 * as zero). When maxNorm > 0 and the norm exceeds it, every gradient is scaled by
 * maxNorm / (norm + 1e-6). maxNorm <= 0 only measures. A non-finite norm is returned as is and
 * nothing is scaled (the caller decides what to do).
 */
export function clipGradNorm(params: Tensor[] | [string, Tensor][], maxNorm: number): number {
  const grads: Float32Array[] = [];
  for (const item of params) {
    const t = Array.isArray(item) ? item[1] : item;
    if (t.grad) grads.push(t.grad);
  }
  let sum = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) sum += g[i]! * g[i]!;
  const norm = Math.sqrt(sum);
  if (maxNorm > 0 && Number.isFinite(norm) && norm > maxNorm) {
    const coef = maxNorm / (norm + 1e-6);
    for (const g of grads) backend().scale(g, g, coef);
  }
  return norm;
}
