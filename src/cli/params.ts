/** `lora params`: the paper's parameter arithmetic, full matrix versus rank-r update. */
import { type Command, num, UsageError, type Values } from "./command.js";

const fmt = (n: number) => n.toLocaleString("en-US");

export function parseShape(s: string): [number, number] {
  const m = /^(\d+)[x×*,](\d+)$/i.exec(s.trim());
  if (!m || Number(m[1]) <= 0 || Number(m[2]) <= 0) {
    throw new UsageError(`--shape must look like DxK with positive integers (e.g. 4096x4096), got "${s}"`);
  }
  return [Number(m[1]), Number(m[2])];
}

export interface ParamRow {
  shape: [number, number];
  full: number;
  lora: number;
}

/** Full d·k parameters versus r·(d + k) for each shape. */
export function paramRows(shapes: [number, number][], rank: number): ParamRow[] {
  return shapes.map(([d, k]) => {
    if (rank > Math.min(d, k)) {
      throw new UsageError(`--rank ${rank} is larger than min(d, k) = ${Math.min(d, k)} for shape ${d}x${k}`);
    }
    return { shape: [d, k], full: d * k, lora: rank * (d + k) };
  });
}

export function reduction(full: number, lora: number): string {
  const x = full / lora;
  return `${Number.isInteger(x) ? fmt(x) : x >= 100 ? fmt(Math.round(x)) : x.toFixed(1)}×`;
}

export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(header), ...rows.map(line)].join("\n");
}

export const paramsCommand: Command = {
  name: "params",
  summary: "Count trainable parameters: a full d×k matrix versus a rank-r LoRA update r·(d + k).",
  usage: "lora params --shape DxK [--shape DxK ...] [--rank R] [--matrices N]",
  flags: {
    shape: { type: "string", multiple: true, valueName: "DxK", description: "a weight matrix shape, d×k" },
    rank: { type: "string", valueName: "R", description: "LoRA rank r (default 8)" },
    matrices: { type: "string", valueName: "N", description: "how many matrices of each shape (default 1)" },
  },
  examples: [
    "lora params --shape 1000x1000 --rank 4",
    "lora params --shape 12288x12288 --rank 4 --matrices 192",
  ],
  run(v: Values) {
    const shapes = ((v.shape as string[] | undefined) ?? []).map(parseShape);
    if (shapes.length === 0) throw new UsageError("give at least one --shape DxK; see 'lora params --help'");
    const rank = num(v, "rank", 8, { int: true, min: 1 });
    const n = num(v, "matrices", 1, { int: true, min: 1 });
    const rows = paramRows(shapes, rank);
    const body = rows.map((r) => [
      `${r.shape[0]}x${r.shape[1]}`,
      fmt(r.full),
      fmt(r.lora),
      reduction(r.full, r.lora),
    ]);
    const full = rows.reduce((s, r) => s + r.full, 0) * n;
    const lora = rows.reduce((s, r) => s + r.lora, 0) * n;
    if (rows.length > 1 || n > 1)
      body.push([n > 1 ? `total (×${n})` : "total", fmt(full), fmt(lora), reduction(full, lora)]);
    console.log(formatTable(["matrix", "full", `LoRA r=${rank}`, "reduction"], body));
    console.log(
      `\nLoRA trains ${fmt(lora)} parameters instead of ${fmt(full)} (${reduction(full, lora)} fewer).`,
    );
  },
};
