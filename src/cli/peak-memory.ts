/**
 * The process's peak resident memory for `lora experiment full`: Linux's high-water mark (VmHWM in
 * /proc/self/status), reset before each run by writing 5 to /proc/self/clear_refs, after a garbage
 * collection so the previous run's garbage is not counted; elsewhere, Node's lifetime maximum
 * (process.resourceUsage().maxRSS), which cannot be reset and so only bounds each run from above.
 */
import fs from "node:fs";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { PeakMemory } from "../experiment/runs.js";

/** A full garbage collection, through V8's gc() exposed for the moment (node --expose-gc). */
function collect(): void {
  setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
}

function highWaterKiB(): number | null {
  try {
    const m = fs.readFileSync("/proc/self/status", "utf8").match(/^VmHWM:\s+(\d+) kB/m);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

export function peakMemoryMeter(): PeakMemory {
  let resettable = true;
  try {
    fs.writeFileSync("/proc/self/clear_refs", "5");
  } catch {
    resettable = false;
  }
  if (resettable && highWaterKiB() !== null)
    return {
      method:
        "the process's resident-set high-water mark (Linux VmHWM), reset at the start of each run's training after a full garbage collection",
      reset() {
        collect();
        fs.writeFileSync("/proc/self/clear_refs", "5");
        return process.memoryUsage().rss;
      },
      peak: () => highWaterKiB()! * 1024,
    };
  return {
    method:
      "Node's lifetime maximum resident set (process.resourceUsage().maxRSS; this system cannot reset it, so each run's peak includes the runs before it)",
    reset() {
      collect();
      return process.memoryUsage().rss;
    },
    peak: () => process.resourceUsage().maxRSS * 1024,
  };
}
