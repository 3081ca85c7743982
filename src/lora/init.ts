/**
 * How a LoRA layer's A and B start (PEFT's `init_lora_weights`), as PEFT's LoraLayer computes them
 * (peft 0.21, tuners/lora/layer.py):
 *   kaiming (PEFT's true): A = nn.init.kaiming_uniform_(a=√5) on [r, in]: gain √(2/(1+5)), bound
 *     gain·√3/√in = 1/√in, so A ~ U(±1/√in); B = 0.
 *   gaussian: A ~ N(0, (1/r)²) (nn.init.normal_(std=1/r)); B = 0.
 *   pissa: the thin SVD W0 = U·S·Vᵀ ([out, in]); with the top r triplets and S' = S_r / scaling,
 *     A = diag(√S')·V_rᵀ [r, in], B = U_r·diag(√S') [out, r]; W0 becomes W0 - scaling·B·A (the residual).
 *   pissa_niter_N: the same from torch.svd_lowrank(W0, q=r, niter=N) (randomized, N subspace iterations).
 *   olora: the reduced QR W0 = Q·R; A = R[:r] [r, in], B = Q[:, :r] [out, r]; W0 becomes W0 - scaling·B·A.
 * The three last ones change W0 and are "mutating": the adapter then works on the residual base only (see
 * convert.ts for the plain LoRA of the original W0). They are computed in f64 from the f32 W0 and
 * rounded to f32 (PEFT computes in f32); a 16-bit W0 gets its residual rounded back to its dtype, as
 * PEFT's weight.to(dtype).
 */
import { Rng } from "../tensor/random.js";
import { qr, randomizedSvd, type Svd, svd } from "./lowrank.js";

/** The initialisations a fresh LoRA layer can start from. */
export type LoraInit = "kaiming" | "gaussian" | "pissa" | `pissa_niter_${number}` | "olora";

/** `pissa_niter_N` with N a non-negative integer, as PEFT spells it. */
const NITER = /^pissa_niter_(\d+)$/;

/** True for an init this library computes: kaiming, gaussian, pissa, pissa_niter_N (N >= 0), olora. */
export function isLoraInit(x: unknown): x is LoraInit {
  return typeof x === "string" && (["kaiming", "gaussian", "pissa", "olora"].includes(x) || NITER.test(x));
}

/** True for the inits that replace W0 by a residual (PiSSA and OLoRA). */
export function isMutatingInit(x: unknown): x is "pissa" | `pissa_niter_${number}` | "olora" {
  return typeof x === "string" && (x === "pissa" || x === "olora" || NITER.test(x));
}

/** The stream pissa_niter_N draws its random test matrix from, the same for every layer and run, so that
 * loading the adapter again recomputes the same residual (torch draws it from its global generator). */
export const NITER_SEED = 0x9155a;

/** A fresh A [r, in] (kaiming or gaussian), drawn from `rng` in row-major order. */
export function randomA(init: "kaiming" | "gaussian", r: number, inF: number, rng: Rng): Float32Array {
  const a = new Float32Array(r * inF);
  if (init === "gaussian") for (let i = 0; i < a.length; i++) a[i] = rng.normal() / r;
  else {
    const bound = 1 / Math.sqrt(inF);
    for (let i = 0; i < a.length; i++) a[i] = -bound + 2 * bound * rng.uniform();
  }
  return a;
}

export interface MutatedInit {
  /** A [r, in] and B [out, r], f32. */
  A: Float32Array;
  B: Float32Array;
  /** W0 - scaling·B·A, [out, in], f32. */
  residual: Float32Array;
}

/**
 * PiSSA or OLoRA from the f32 weight w [out, in] (row-major): A, B and the residual W0 - scaling·B·A,
 * the product taken of the f32-rounded A and B, as PEFT takes it.
 */
export function mutatedInit(
  init: "pissa" | `pissa_niter_${number}` | "olora",
  w: Float32Array,
  outF: number,
  inF: number,
  r: number,
  scaling: number,
): MutatedInit {
  const k = Math.min(outF, inF);
  if (!(Number.isInteger(r) && r >= 1 && r <= k))
    throw new RangeError(`${init} needs a rank r in [1, min(out, in) = ${k}], got ${r}`);
  const at = (i: number, j: number) => w[i * inF + j]!;
  const A = new Float32Array(r * inF);
  const B = new Float32Array(outF * r);
  if (init === "olora") {
    const { q, r: R } = qr(outF, inF, at); // q [out, k], R [k, in]
    for (let i = 0; i < r; i++) for (let j = 0; j < inF; j++) A[i * inF + j] = R[i * inF + j]!;
    for (let i = 0; i < outF; i++) for (let c = 0; c < r; c++) B[i * r + c] = q[i * k + c]!;
  } else {
    const niter = NITER.exec(init);
    const rng = new Rng(NITER_SEED);
    const f: Svd = niter
      ? randomizedSvd(outF, inF, at, r, Number(niter[1]), () => rng.normal())
      : svd(outF, inF, at);
    for (let c = 0; c < r; c++) {
      const root = Math.sqrt(f.s[c]! / scaling);
      for (let j = 0; j < inF; j++) A[c * inF + j] = root * f.v[j * f.k + c]!;
      for (let i = 0; i < outF; i++) B[i * r + c] = f.u[i * f.k + c]! * root;
    }
  }
  const residual = new Float32Array(outF * inF);
  for (let i = 0; i < outF; i++)
    for (let j = 0; j < inF; j++) {
      let sum = 0;
      for (let c = 0; c < r; c++) sum += B[i * r + c]! * A[c * inF + j]!;
      residual[i * inF + j] = w[i * inF + j]! - scaling * sum;
    }
  return { A, B, residual };
}

/** PEFT's init_lora_weights values that give a plain LoRA at load (no change to W0): read as true. */
const PLAIN_AT_LOAD = ["eva", "orthogonal", "mica"];

/**
 * adapter_config.json's init_lora_weights as this library keeps it, or why it cannot be used: true,
 * false, "gaussian", "pissa", "pissa_niter_N" and "olora" are kept; PEFT's inits that leave W0 alone
 * (eva, orthogonal, mica) read as true; loftq, corda and lora_ga change W0 in ways that need 4-bit
 * quantisation or data, and are refused.
 */
export function parseInitLoraWeights(
  x: unknown,
): { init: boolean | Exclude<LoraInit, "kaiming"> } | { problem: string } {
  if (x === undefined || x === null || x === true) return { init: true };
  if (x === false) return { init: false };
  if (typeof x === "string" && isLoraInit(x) && x !== "kaiming") return { init: x };
  if (typeof x === "string" && PLAIN_AT_LOAD.includes(x)) return { init: true };
  if (x === "loftq")
    return {
      problem:
        'init_lora_weights "loftq" needs LoftQ\'s 4-bit quantised base model, and this library does no 4-bit quantisation; load the adapter with the LoftQ base it was trained on in PEFT, or train with --init pissa (the same idea without quantisation)',
    };
  if (x === "corda" || x === "lora_ga")
    return {
      problem: `init_lora_weights ${JSON.stringify(x)} changes the base weights from data statistics this library does not compute; convert the adapter to a plain LoRA in PEFT first (save_pretrained with path_initial_model_for_weight_conversion)`,
    };
  return {
    problem: `init_lora_weights must be true, false, "gaussian", "pissa", "pissa_niter_N" (N a whole number) or "olora", got ${JSON.stringify(x)}`,
  };
}
