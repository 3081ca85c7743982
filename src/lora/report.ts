/**
 * What an adapter holds, for `lora inspect`: per target type its r, alpha and scale; per module
 * ‖ΔW‖_F = ‖scale·B·A‖_F and the singular values and effective rank of ΔW (lowrank.ts, without forming
 * ΔW); the parameter count.
 */
import { layerIndex } from "./inject.js";
import { type DeltaStats, deltaStats, EFFECTIVE_RANK_TOL } from "./lowrank.js";

/** An adapted module: A [r, in] and B [out, r] row-major, with its alpha and scale. */
export interface ReportModule {
  path: string;
  r: number;
  in: number;
  out: number;
  alpha: number;
  scale: number;
  A: Float32Array;
  B: Float32Array;
}

export interface ModuleReport extends DeltaStats {
  path: string;
  type: string;
  /** ΔW's shape [out, in]. */
  shape: [number, number];
  r: number;
  alpha: number;
  scale: number;
  parameters: number;
}

export interface TypeReport {
  /** The module's path inside a block ("self_attn.q_proj"), or its whole path outside one ("lm_head"). */
  type: string;
  modules: number;
  /** The distinct values over the type's modules. */
  r: number[];
  alpha: number[];
  scale: number[];
  parameters: number;
}

export interface AdapterReport {
  parameters: number;
  types: TypeReport[];
  modules: ModuleReport[];
  /** The effective rank counts singular values above this fraction of the module's largest. */
  effective_rank_tolerance: number;
}

/** The module's path inside its block ("model.layers.3.self_attn.q_proj" -> "self_attn.q_proj"). */
export function targetType(path: string): string {
  if (layerIndex(path) === null) return path;
  return /(?:^|\.)(?:layers|h|blocks|layer)\.\d+\.(.+)$/.exec(path)?.[1] ?? path;
}

const distinct = (xs: number[]) => [...new Set(xs)].sort((a, b) => a - b);

export function adapterReport(modules: readonly ReportModule[]): AdapterReport {
  const reports = modules.map((m): ModuleReport => {
    const stats = deltaStats(m.B, m.A, m.out, m.r, m.in, m.scale);
    return {
      path: m.path,
      type: targetType(m.path),
      shape: [m.out, m.in],
      r: m.r,
      alpha: m.alpha,
      scale: m.scale,
      parameters: m.r * (m.in + m.out),
      ...stats,
    };
  });
  const byType = new Map<string, ModuleReport[]>();
  for (const m of reports) byType.set(m.type, [...(byType.get(m.type) ?? []), m]);
  const types = [...byType].map(([type, ms]) => ({
    type,
    modules: ms.length,
    r: distinct(ms.map((m) => m.r)),
    alpha: distinct(ms.map((m) => m.alpha)),
    scale: distinct(ms.map((m) => m.scale)),
    parameters: ms.reduce((s, m) => s + m.parameters, 0),
  }));
  return {
    parameters: reports.reduce((s, m) => s + m.parameters, 0),
    types,
    modules: reports,
    effective_rank_tolerance: EFFECTIVE_RANK_TOL,
  };
}
