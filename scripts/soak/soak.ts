/**
 * `npm run soak`: the kill -9 soak of `lora train` (kill-soak.ts) with 20 kills by default.
 *   --kills N       how many SIGKILLs (default 20)
 *   --seed N        the kill plan's and the run's seed (default: random, printed)
 *   --steps N       the run's length (default 8 × kills, at least 24)
 *   --minutes M     the time limit (default 15)
 *   --keep-files    leave the work folder for a look (its path is printed)
 * Exits 1 unless every kill was survived with a byte-identical adapter and clean metrics.
 */
import fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Rng } from "../../src/tensor/random.js";
import { planKills, soak } from "./kill-soak.js";

const { values } = parseArgs({
  options: {
    kills: { type: "string", default: "20" },
    seed: { type: "string" },
    steps: { type: "string" },
    minutes: { type: "string", default: "15" },
    "keep-files": { type: "boolean", default: false },
  },
});
const kills = Number(values.kills);
const seed = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
const steps = values.steps !== undefined ? Number(values.steps) : Math.max(24, 8 * kills);
if (![kills, seed, steps].every((n) => Number.isInteger(n) && n > 0)) {
  console.error("--kills, --seed and --steps take positive integers");
  process.exit(2);
}
const workDir = fs.mkdtempSync(join(tmpdir(), "lora-soak-"));
const plan = planKills(kills, new Rng(seed));
console.log(
  `soak: ${kills} kills, seed ${seed}, ${steps} steps, a checkpoint every 2 steps (--keep 2), in ${workDir}`,
);
const report = await soak({
  workDir,
  kills: plan,
  seed,
  steps,
  saveEvery: 2,
  keep: 2,
  timeLimitMs: Number(values.minutes) * 60_000,
  log: (line) => console.log(`  ${line}`),
});
console.log(
  `\nkills survived: ${report.identical ? report.kills : 0} of ${kills} (seed ${seed}), ${report.seconds.toFixed(1)} s`,
);
console.log("kills by phase:");
for (const [phase, n] of Object.entries(report.phases).sort())
  console.log(`  ${String(n).padStart(3)}  ${phase}`);
console.log(
  `checkpoint folders inspected after kills: ${report.checkpointsChecked} (each complete, loadable, the uninterrupted run's bytes)`,
);
console.log(
  `temporary entries left by kills: ${report.leftovers} (removed by the resumes); restarts with no checkpoint: ${report.restarts}; random kills that came too late: ${report.missed}`,
);
if (report.problems.length > 0) {
  console.log(`\nFAILED (seed ${seed}):\n  ${report.problems.join("\n  ")}`);
  console.log(`the runs are in ${workDir}`);
  process.exitCode = 1;
} else {
  console.log(
    "the final adapter is byte-identical to the uninterrupted run's; metrics.jsonl has each step once",
  );
  if (!values["keep-files"]) fs.rmSync(workDir, { recursive: true, force: true });
  else console.log(`the runs are in ${workDir}`);
}
