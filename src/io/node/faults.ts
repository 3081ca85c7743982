/**
 * Fault points for the reliability tests (the kill -9 soak, the full-disk tests). Each is a no-op
 * unless its environment variable names it; nothing sets them outside those tests:
 *   LORA_KILL_AT=point[:n]   SIGKILL this process the n-th time (default: the first) it reaches `point`
 *   LORA_FULL_AT=point[:n]   from the n-th time on, the write at `point` fails as on a full disk (ENOSPC)
 * The points, in the order a checkpoint reaches them:
 *   checkpoint-file    before each file of a checkpoint is written into its temporary folder
 *   checkpoint-rename  the temporary folder complete, before it becomes step-N
 *   prune              an old checkpoint moved aside, before it is deleted
 *   metrics            before a metrics.jsonl row is appended
 *   outputs            before each output file (the adapter at the end of a run)
 */

export type FaultPoint = "checkpoint-file" | "checkpoint-rename" | "prune" | "metrics" | "outputs";

const hits = new Map<FaultPoint, number>();

/** The n of `VAR=point[:n]` when it names `point`, else null. */
function armed(variable: string, point: FaultPoint): number | null {
  const spec = process.env[variable];
  if (!spec) return null;
  const [name, n] = spec.split(":");
  if (name !== point) return null;
  const at = n === undefined ? 1 : Number(n);
  return Number.isInteger(at) && at >= 1 ? at : 1;
}

/** Marks `point` reached: kills the process or fails the write there when a test asked for it. */
export function faultPoint(point: FaultPoint): void {
  const kill = armed("LORA_KILL_AT", point);
  const full = armed("LORA_FULL_AT", point);
  if (kill === null && full === null) return;
  const n = (hits.get(point) ?? 0) + 1;
  hits.set(point, n);
  if (kill !== null && n === kill) process.kill(process.pid, "SIGKILL");
  if (full !== null && n >= full)
    throw Object.assign(new Error(`ENOSPC: no space left on device, write (LORA_FULL_AT=${point})`), {
      code: "ENOSPC",
      errno: -28,
      syscall: "write",
    });
}
