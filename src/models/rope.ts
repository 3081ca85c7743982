/**
 * RoPE settings and inverse frequencies, as transformers' modeling_rope_utils computes them:
 * "default" (theta^(-2i/D)), "linear" (divided by factor), "dynamic" (NTK: the base grows once the
 * sequence passes max_position_embeddings) and "llama3" (Llama 3.1+: low frequencies divided by
 * factor, high ones kept, a smooth blend between). Other rope types are refused, naming these.
 *
 * config.json spells them two ways: transformers 5 writes `rope_parameters` {rope_type, rope_theta,
 * factor, ...}; transformers 4 wrote `rope_scaling` {rope_type | type, factor, ...} beside a top-level
 * `rope_theta`. Both are read; a config holding both that disagree is refused, and a theta present in
 * either spelling is never replaced by a default. Frequencies are computed in f64.
 */

export const ROPE_TYPES = ["default", "linear", "dynamic", "llama3"] as const;
export type RopeType = (typeof ROPE_TYPES)[number];

export interface RopeSettings {
  type: RopeType;
  theta: number;
  /** linear, dynamic, llama3 */
  factor: number;
  /** llama3 */
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMax: number;
}

type Json = Record<string, unknown>;
const SCALING_KEYS = ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"];

/**
 * The RoPE settings of a config.json; every problem is pushed to `errors` (the caller throws once).
 * `defaultTheta` is the config class's own default, used only when neither spelling has a theta.
 */
export function parseRope(json: Json, defaultTheta: number, errors: string[]): RopeSettings {
  const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
  const params = json.rope_parameters;
  const scaling = json.rope_scaling;
  if (params !== undefined && params !== null && !isObj(params))
    errors.push(`"rope_parameters" must be an object, got ${JSON.stringify(params)}`);
  if (scaling !== undefined && scaling !== null && !isObj(scaling))
    errors.push(`"rope_scaling" must be an object or null, got ${JSON.stringify(scaling)}`);
  const v5 = isObj(params) ? params : null;
  const v4 = isObj(scaling) ? scaling : null;
  const typeOf = (o: Json | null) => (o ? (o.rope_type ?? o.type) : undefined);

  // both spellings present: every field that both give must agree
  if (v5 && (v4 || json.rope_theta !== undefined)) {
    const pairs: [string, unknown, unknown][] = [
      ["rope_theta", v5.rope_theta, json.rope_theta],
      ["rope_type", typeOf(v5), typeOf(v4)],
      ...SCALING_KEYS.map((k): [string, unknown, unknown] => [k, v5[k], v4?.[k]]),
    ];
    for (const [k, a, b] of pairs) {
      const norm = (x: unknown) => (k === "rope_type" && x === undefined ? "default" : x);
      if (a !== undefined && b !== undefined && norm(a) !== norm(b))
        errors.push(
          `rope_parameters.${k} is ${JSON.stringify(a)} but the transformers-4 spelling (rope_scaling / rope_theta) says ${JSON.stringify(b)}; keep one`,
        );
    }
  }
  const src: Json = { ...(v4 ?? {}), ...(v5 ?? {}) };
  const type = (typeOf(v5) ?? typeOf(v4) ?? "default") as string;
  if (!(ROPE_TYPES as readonly string[]).includes(type))
    errors.push(`rope_type "${type}" is not supported; supported: ${ROPE_TYPES.join(", ")}`);
  const theta = v5?.rope_theta ?? json.rope_theta ?? defaultTheta;
  const num = (key: string, value: unknown, fallback?: number): number => {
    const x = value ?? fallback;
    if (typeof x !== "number" || !Number.isFinite(x) || x <= 0) {
      errors.push(`${key} must be a positive number, got ${JSON.stringify(value)}`);
      return Number.NaN;
    }
    return x;
  };
  // factor for every scaled type; the llama3 rule also needs its three own fields
  const scaled = type === "linear" || type === "dynamic" || type === "llama3";
  const field = (k: string, fallback?: number) =>
    (k === "factor" ? scaled : type === "llama3") ? num(`rope ${type}: ${k}`, src[k], fallback) : Number.NaN;
  const prf = src.partial_rotary_factor ?? json.partial_rotary_factor;
  if (prf !== undefined && prf !== 1)
    errors.push(
      `partial_rotary_factor ${JSON.stringify(prf)} is not supported (only 1: RoPE on the whole head)`,
    );
  const s: RopeSettings = {
    type: type as RopeType,
    theta: num("rope_theta", theta),
    factor: field("factor"),
    lowFreqFactor: field("low_freq_factor"),
    highFreqFactor: field("high_freq_factor"),
    originalMax: field("original_max_position_embeddings", json.max_position_embeddings as number),
  };
  if (type === "llama3" && !(s.highFreqFactor > s.lowFreqFactor))
    errors.push(
      `rope llama3: high_freq_factor ${s.highFreqFactor} must exceed low_freq_factor ${s.lowFreqFactor}`,
    );
  return s;
}

/** theta^(-2i/D) for i < D/2. */
const plain = (D: number, theta: number) =>
  Float64Array.from({ length: D / 2 }, (_, i) => theta ** ((-2 * i) / D));

/** The inverse frequencies of the static rope types ("dynamic" before it grows). */
export function inverseFrequencies(s: RopeSettings, D: number): Float64Array {
  const f = plain(D, s.theta);
  if (s.type === "linear") return f.map((x) => x / s.factor);
  if (s.type !== "llama3") return f;
  const lowWavelen = s.originalMax / s.lowFreqFactor;
  const highWavelen = s.originalMax / s.highFreqFactor;
  return f.map((x) => {
    const wavelen = (2 * Math.PI) / x;
    if (wavelen < highWavelen) return x; // high frequencies: kept
    if (wavelen > lowWavelen) return x / s.factor; // low frequencies: interpolated by factor
    const smooth = (s.originalMax / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (x / s.factor) + smooth * x;
  });
}

/**
 * A model's rotary frequencies for each forward pass. Static for every type but "dynamic", which,
 * like transformers' dynamic_rope_update, recomputes the base when a pass reaches past the longest
 * length seen so far (starting from max_position_embeddings), and returns to the original
 * frequencies when a pass is shorter than max_position_embeddings again.
 */
export class Rotary {
  private readonly original: Float64Array;
  private current: Float64Array;
  private cached: number;

  constructor(
    private readonly s: RopeSettings,
    private readonly D: number,
    private readonly maxPositions: number,
  ) {
    this.original = inverseFrequencies(s, D);
    this.current = this.original;
    this.cached = maxPositions;
  }

  /** The frequencies for a pass whose last position is seqLen - 1. */
  frequencies(seqLen: number): Float64Array {
    if (this.s.type !== "dynamic") return this.current;
    const { factor, theta } = this.s;
    const max = this.maxPositions;
    if (seqLen > this.cached) {
      const base = theta * ((factor * seqLen) / max - (factor - 1)) ** (this.D / (this.D - 2));
      this.current = plain(this.D, base);
      this.cached = seqLen;
    }
    if (seqLen < max && this.cached > max) {
      this.current = this.original;
      this.cached = max;
    }
    return this.current;
  }
}
