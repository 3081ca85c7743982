/**
 * The kill -9 soak, short: 4 SIGKILLs of `lora train` (mid-checkpoint, mid-pruning, at a random
 * moment, and between the final adapter's two files), each followed by `lora train --resume`;
 * `npm run soak` does 20. See scripts/soak/kill-soak.ts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, it } from "node:test";
import { soak } from "../../scripts/soak/kill-soak.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-soak-test-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

it("4 kills -9 mid-checkpoint, mid-pruning, at random and between the final adapter's files, each resumed: the adapter is byte-identical, metrics hold each step once", async () => {
  const report = await soak({
    workDir: tmp,
    kills: [
      { kind: "point", point: "checkpoint-file" },
      { kind: "point", point: "prune" },
      { kind: "random" },
      // between the final adapter's two files (the weights written, adapter_config.json not yet)
      { kind: "point", point: "outputs", n: 2 },
    ],
    seed: 7,
    steps: 10,
    saveEvery: 2,
    keep: 1,
    timeLimitMs: 60_000,
  });
  assert.deepEqual(report.problems, []);
  assert.equal(report.kills, 4);
  assert.equal(report.phases["at checkpoint-file"], 1);
  assert.equal(report.phases["at prune"], 1);
  assert.equal(report.phases["at outputs"], 1);
  // every checkpoint folder seen after a kill was complete and held the uninterrupted run's bytes
  assert.ok(report.checkpointsChecked >= 2, `${report.checkpointsChecked} checkpoint folders inspected`);
  assert.ok(report.identical);
});
