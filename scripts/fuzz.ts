/**
 * `npm run fuzz`: the fuzz suites (test/fuzz) at a larger size and a random seed, printed first so a
 * failure can be replayed: `npm run fuzz -- --seed N [--scale K]` (default scale 20: 20 times the cases
 * npm test runs). fast-check prints the failing case and its seed and path too.
 */
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { seed: { type: "string" }, scale: { type: "string" } } });
const seed = values.seed ?? String(Math.floor(Math.random() * 2 ** 31));
const scale = values.scale ?? "20";
console.log(`fuzz: seed ${seed}, scale ${scale} (replay: npm run fuzz -- --seed ${seed} --scale ${scale})`);
const r = spawnSync(process.execPath, ["--test", "--test-timeout=3600000", resolve("dist/test/fuzz")], {
  stdio: "inherit",
  env: { ...process.env, LORA_FUZZ_SEED: seed, LORA_FUZZ_SCALE: scale },
});
console.log(`fuzz: seed ${seed}, scale ${scale}: ${r.status === 0 ? "no failures" : "FAILED"}`);
process.exitCode = r.status ?? 1;
