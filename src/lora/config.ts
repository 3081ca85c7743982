/**
 * LoRA configuration, with PEFT's adapter_config.json field names (snake_case), and its checks.
 * Only fields this toolkit acts on are listed; io/ ignores the rest when reading.
 */
import type { LoraInit } from "./init.js";

export interface LoraConfig {
  /** Rank of the update B·A. */
  r: number;
  /** Scale numerator: the update is multiplied by lora_alpha / r (or / √r with use_rslora). */
  lora_alpha: number;
  lora_dropout: number;
  /** A list (exact names or name suffixes), a full-match regex string, or "all-linear". */
  target_modules: string[] | string;
  /** Module names (exact, suffix) or a regex string never to adapt. */
  exclude_modules?: string[] | string | null;
  /** Only adapt blocks with these indices. */
  layers_to_transform?: number[] | null;
  use_rslora: boolean;
  /**
   * PEFT: true = kaiming-uniform A (its default); "gaussian" = A ~ N(0, (1/r)²), B = 0 either way;
   * "pissa", "pissa_niter_N", "olora" take A and B from W0 and replace W0 by the residual, at training
   * and again at every load (init.ts).
   */
  init_lora_weights: boolean | Exclude<LoraInit, "kaiming">;
  /** Per-module rank and alpha overrides: key (exact name, suffix or regex) -> value. */
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  /** DoRA: each adapted row rescaled to a trained magnitude (lora_magnitude_vector), see dora.ts. */
  use_dora?: boolean;
  /** true when the base layer stores its weight [in, out] (GPT-2's Conv1D). */
  fan_in_fan_out?: boolean;
  /** Modules trained in full and saved whole (PEFT's plain suffix match): see modules-to-save.ts. */
  modules_to_save?: string[] | null;
  /** Embedding rows to train: ids of the input embedding, or {embedding name: ids}: see trainable-tokens.ts. */
  trainable_token_indices?: number[] | Record<string, number[]> | null;
  /** PEFT's tying of adapters on tied layers; only false (its default) is supported. */
  ensure_weight_tying?: boolean;
}

export const LORA_DEFAULTS = {
  r: 8,
  lora_alpha: 16,
  lora_dropout: 0,
  use_rslora: false,
  init_lora_weights: true,
} as const;

/** The update's scale factor. */
export function loraScaling(r: number, alpha: number, rslora: boolean): number {
  return rslora ? alpha / Math.sqrt(r) : alpha / r;
}

/**
 * Throws a message naming the value and what was expected, for a rank, alpha or dropout out of range.
 * `given`: the weights exist already (a loaded adapter), so r > min(in, out) is allowed, as PEFT loads
 * it (a PiSSA adapter converted to rank 2r can be one); a fresh layer must be low-rank.
 */
export function checkLoraShape(
  r: number,
  alpha: number,
  dropout: number,
  inF: number,
  outF: number,
  where = "",
  given = false,
) {
  const at = where ? ` (${where})` : "";
  if (!Number.isInteger(r) || r <= 0)
    throw new RangeError(`LoRA rank r must be a positive integer, got ${r}${at}`);
  if (!given && r > Math.min(inF, outF)) {
    throw new RangeError(
      `LoRA rank r=${r} is larger than min(in, out) = min(${inF}, ${outF}) = ${Math.min(inF, outF)}${at}; a low-rank update needs r <= ${Math.min(inF, outF)}`,
    );
  }
  if (!(alpha > 0) || !Number.isFinite(alpha))
    throw new RangeError(`lora_alpha must be > 0, got ${alpha}${at}`);
  if (!(dropout >= 0 && dropout < 1))
    throw new RangeError(`lora_dropout must be in [0, 1), got ${dropout}${at}`);
}

/** The layer init a config asks for (true and false: kaiming). OLoRA on a fan_in_fan_out base is refused. */
export function layerInit(config: Pick<LoraConfig, "init_lora_weights" | "fan_in_fan_out">): LoraInit {
  const init = config.init_lora_weights;
  if (init === "olora" && config.fan_in_fan_out)
    throw new Error(
      'init_lora_weights "olora" on a base that stores its weights [in, out] (fan_in_fan_out: GPT-2\'s Conv1D) is not supported: PEFT takes the QR of the stored [in, out] matrix there, whose factors do not fit A [r, in] and B [out, r]; use "pissa" or the default init',
    );
  return typeof init === "string" ? init : "kaiming";
}
