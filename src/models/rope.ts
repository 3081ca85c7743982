/**
 * RoPE settings and inverse frequencies, as transformers' modeling_rope_utils computes them:
 * "default" (theta^(-2i/R)), "linear" (divided by factor), "dynamic" (NTK: the base grows once the
 * sequence passes max_position_embeddings), "llama3" (Llama 3.1+: low frequencies divided by factor,
 * high ones kept, a smooth blend between) and "longrope" (Phi-3/4: per-frequency short or long factors
 * chosen by the sequence length, and an attention factor on cos/sin). Other rope types are refused,
 * naming these. R = head_dim · partial_rotary_factor dims rotate; the rest pass through.
 *
 * config.json spells them two ways: transformers 5 writes `rope_parameters` {rope_type, rope_theta,
 * factor, ...}; transformers 4 wrote `rope_scaling` {rope_type | type, factor, ...} beside a top-level
 * `rope_theta`. Both are read; a config holding both that disagree is refused, and a theta present in
 * either spelling is never replaced by a default. Frequencies are computed in f64.
 */
import { ropeFrequencies } from "../autograd/ops.js";

export const ROPE_TYPES = ["default", "linear", "dynamic", "llama3", "longrope"] as const;
export type RopeType = (typeof ROPE_TYPES)[number];

export interface RopeSettings {
  type: RopeType;
  theta: number;
  /** linear, dynamic, llama3 */
  factor: number;
  /** llama3 */
  lowFreqFactor: number;
  highFreqFactor: number;
  /** llama3, longrope */
  originalMax: number;
  /** The fraction of head_dim that rotates (Phi-4-mini: 0.75). */
  partial: number;
  /** longrope: one factor per rotated frequency, for sequences up to / past originalMax */
  shortFactor: number[];
  longFactor: number[];
  /** longrope: cos and sin are multiplied by it (1 for the other types) */
  attentionFactor: number;
}

/** One pass's rotary embedding: frequencies [R/2] and the factor on cos/sin. */
export interface RotaryPass {
  freqs: Float64Array;
  scale: number;
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
  // factor for every scaled type but longrope (whose default is the context ratio); the llama3 rule
  // also needs its three own fields, longrope the original context
  const scaled = type === "linear" || type === "dynamic" || type === "llama3";
  const needs = (k: string) =>
    k === "factor"
      ? scaled
      : k === "original_max_position_embeddings"
        ? type === "llama3" || type === "longrope"
        : type === "llama3";
  const field = (k: string, fallback?: number) =>
    needs(k) ? num(`rope ${type}: ${k}`, src[k], fallback) : Number.NaN;
  const prf = src.partial_rotary_factor ?? json.partial_rotary_factor ?? 1;
  if (typeof prf !== "number" || !(prf > 0 && prf <= 1))
    errors.push(`partial_rotary_factor must be a number in (0, 1], got ${JSON.stringify(prf)}`);
  const originalMax =
    type === "longrope"
      ? field("original_max_position_embeddings", json.original_max_position_embeddings as number)
      : field("original_max_position_embeddings", json.max_position_embeddings as number);
  const s: RopeSettings = {
    type: type as RopeType,
    theta: num("rope_theta", theta),
    factor: field("factor"),
    lowFreqFactor: field("low_freq_factor"),
    highFreqFactor: field("high_freq_factor"),
    originalMax,
    partial: typeof prf === "number" ? prf : 1,
    shortFactor: [],
    longFactor: [],
    attentionFactor: 1,
  };
  if (type === "longrope") {
    const list = (k: string) => {
      const v = src[k];
      if (
        Array.isArray(v) &&
        v.length > 0 &&
        v.every((x) => typeof x === "number" && Number.isFinite(x) && x > 0)
      )
        return v as number[];
      errors.push(`rope longrope: ${k} must be a list of positive numbers, got ${JSON.stringify(v)}`);
      return [];
    };
    s.shortFactor = list("short_factor");
    s.longFactor = list("long_factor");
    // transformers: factor defaults to max_position_embeddings / original; the attention factor to
    // sqrt(1 + ln(factor) / ln(original)) when factor > 1
    const factor = src.factor ?? (json.max_position_embeddings as number) / originalMax;
    const given = src.attention_factor;
    s.attentionFactor =
      typeof given === "number"
        ? given
        : typeof factor === "number" && factor > 1
          ? Math.sqrt(1 + Math.log(factor) / Math.log(originalMax))
          : 1;
  }
  if (type === "llama3" && !(s.highFreqFactor > s.lowFreqFactor))
    errors.push(
      `rope llama3: high_freq_factor ${s.highFreqFactor} must exceed low_freq_factor ${s.lowFreqFactor}`,
    );
  return s;
}

/**
 * Checks RoPE settings against a head of D dims: the rotated width is even and, for longrope, each
 * factor list has one entry per rotated frequency. `partial`: whether the family rotates part of a head
 * (Phi-3 does; Llama's and Gemma's attention apply RoPE to the whole head, as transformers does).
 */
export function checkRope(s: RopeSettings, D: number, partial: boolean, errors: string[]): void {
  if (!partial && s.partial !== 1)
    errors.push(
      `partial_rotary_factor ${s.partial} is not supported for this model type (RoPE covers the whole head)`,
    );
  const R = rotaryDims(s, D);
  if (R < 2 || R % 2 !== 0)
    errors.push(
      `head_dim ${D} × partial_rotary_factor ${s.partial} = ${R} rotary dims; they must be even and at least 2`,
    );
  if (s.type === "longrope")
    for (const [k, v] of [
      ["short_factor", s.shortFactor],
      ["long_factor", s.longFactor],
    ] as const)
      if (v.length > 0 && v.length !== R / 2)
        errors.push(`rope longrope: ${k} has ${v.length} entries; the ${R} rotary dims need ${R / 2}`);
}

/** The dims that rotate, of a head of D: int(D · partial_rotary_factor), as transformers takes it. */
export const rotaryDims = (s: RopeSettings, D: number) => Math.floor(D * s.partial);

/**
 * The inverse frequencies [R/2] of the static rope types ("dynamic" before it grows, "longrope" with
 * its short factors).
 */
export function inverseFrequencies(s: RopeSettings, D: number, factors = s.shortFactor): Float64Array {
  const R = rotaryDims(s, D);
  const f = ropeFrequencies(R, s.theta);
  if (s.type === "longrope") return f.map((x, i) => x / factors[i]!);
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
 * A model's rotary embedding for each forward pass. Static for every type but "dynamic", which, like
 * transformers' dynamic_rope_update, recomputes the base when a pass reaches past the longest length
 * seen so far (starting from max_position_embeddings) and returns to the original frequencies when a
 * pass is shorter than max_position_embeddings again, and "longrope", which takes its long factors for
 * a pass longer than original_max_position_embeddings and its short ones otherwise.
 */
export class Rotary {
  private readonly original: Float64Array;
  private readonly long: Float64Array | null;
  private current: Float64Array;
  private cached: number;

  constructor(
    private readonly s: RopeSettings,
    private readonly D: number,
    private readonly maxPositions: number,
  ) {
    this.original = inverseFrequencies(s, D);
    this.long = s.type === "longrope" ? inverseFrequencies(s, D, s.longFactor) : null;
    this.current = this.original;
    this.cached = maxPositions;
  }

  /** The rotary embedding of a pass whose last position is seqLen - 1. */
  pass(seqLen: number): RotaryPass {
    const scale = this.s.attentionFactor;
    if (this.long) return { freqs: seqLen > this.s.originalMax ? this.long : this.original, scale };
    if (this.s.type !== "dynamic") return { freqs: this.current, scale };
    const { factor, theta } = this.s;
    const max = this.maxPositions;
    const R = rotaryDims(this.s, this.D);
    if (seqLen > this.cached) {
      const base = theta * ((factor * seqLen) / max - (factor - 1)) ** (R / (R - 2));
      this.current = ropeFrequencies(R, base);
      this.cached = seqLen;
    }
    if (seqLen < max && this.cached > max) {
      this.current = this.original;
      this.cached = max;
    }
    return { freqs: this.current, scale };
  }
}
