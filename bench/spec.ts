/**
 * What one benchmark child runs (the same JSON goes to the Node child and to torch_bench.py),
 * and what each child reports back on stdout.
 */

export interface StepSpec {
  /** Preset id (a, b, tiny). */
  model: string;
  /** Hugging Face config.json object. */
  config: Record<string, unknown>;
  targets: string[];
  r: number;
  alpha: number;
  lr: number;
  batch: number;
  seq: number;
  warmup: number;
  steps: number;
  seed: number;
  /** Greedy generation: a prompt of genPrompt tokens, then genTokens new ones (0 skips it). */
  genPrompt: number;
  genTokens: number;
  /** Record the training step's matmul shapes and time each one (Node side only). */
  gemm: boolean;
  /** Time each GEMM shape for at least this long (at least one call). */
  gemmMinMs: number;
  /** Storage of the frozen base weights on our side (--base-dtype); torch is always f32. */
  baseDtype?: "f32" | "bf16" | "f16";
  /** Folder to write weights.safetensors (initial weights, ids, targets, prompt) into; Node side only. */
  weightsOut?: string;
}

export interface GemmShape {
  batch: number;
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
  accumulate: boolean;
  /** The b operand's storage: a frozen weight may be 16-bit (--base-dtype). */
  bDtype: "f32" | "bf16" | "f16";
  /** Calls of this shape in one training step. */
  callsPerStep: number;
  /** Median milliseconds per call, and the rate 2·batch·M·N·K / time. */
  ms: number;
  gflops: number;
}

export interface TrainResult {
  tokensPerStep: number;
  /** Milliseconds of each timed step (forward + backward + AdamW step + zero grad). */
  stepMs: number[];
  medianMs: number;
  /** tokensPerStep / median step time. */
  tokPerSec: number;
  /** Loss of every step, warm-up included (step 0 is before any update). */
  losses: number[];
  /** maxRSS of the process after training (before generation and the GEMM table), MiB. */
  peakRssMiB: number;
  trainableParams: number;
  totalParams: number;
}

export interface GenResult {
  promptTokens: number;
  newTokens: number;
  /** Whole call, prefill included. */
  ms: number;
  prefillMs: number;
  /** newTokens / ms. */
  tokPerSec: number;
  tokens: number[];
}

export interface ChildResult {
  side: "ours" | "torch";
  threads: number;
  backend: string;
  /** Data fields the backend object exposes (e.g. thread count, relaxed SIMD), when any. */
  backendInfo?: Record<string, unknown>;
  version: string;
  /** torch: the BLAS libraries the process loaded (Debian's reference libblas is ~20x slower than OpenBLAS). */
  blas?: string[];
  train: TrainResult;
  gen: GenResult | null;
  gemm?: GemmShape[];
  /** maxRSS at exit, MiB. */
  finalRssMiB: number;
}
