/**
 * `lora train` when writing fails: a full disk during a checkpoint (injected at the storage layer's
 * fault points, src/io/node/faults.ts; and, opt-in with LORA_TEST_TMPFS=1 as root, a real full
 * tmpfs) keeps the previous checkpoint, says so and how to resume, and the resumed run ends with the
 * uninterrupted run's adapter; a read-only --out is refused before anything is trained or written.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { parseCheckpoint } from "../../src/io/checkpoint.js";
import { readSafetensorsFile } from "../../src/io/node/safetensors-file.js";
import { fixtureModel, lora, loraWith, tokenRows, writeJsonl } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-write-failures-"));
const mounts: string[] = [];
after(() => {
  for (const m of mounts.reverse()) spawnSync("umount", [m]);
  chmodAll(tmp);
  rmSync(tmp, { recursive: true, force: true });
});
/** Undoes the chmods of these tests so the folder can be removed. */
function chmodAll(dir: string): void {
  if (!existsSync(dir)) return;
  chmodSync(dir, 0o755);
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) chmodAll(join(dir, e.name));
}

const data = join(tmp, "data.jsonl");
writeJsonl(
  data,
  tokenRows(24, 0, (i) => 16 + (i % 5)),
);
const settings = [
  "--model",
  fixtureModel("llama_gqa_tied"),
  "--data",
  data,
  "--steps",
  "6",
  "--save-every",
  "2",
];
const train = (env: Record<string, string>, out: string, ...more: string[]) =>
  loraWith(
    env,
    "train",
    ...settings,
    "--out",
    out,
    "--lr",
    "1e-2",
    "--batch-size",
    "3",
    "--eval-every",
    "0",
    ...more,
  );
const adapter = (dir: string) => readFileSync(join(dir, "adapter_model.safetensors"));
/** The checkpoint folder is whole: its four files, parsed as a checkpoint, of that step. */
function assertWhole(dir: string, step: number): void {
  const state = parseCheckpoint(
    JSON.parse(readFileSync(join(dir, "trainer_state.json"), "utf8")),
    readSafetensorsFile(join(dir, "optimizer.safetensors")),
    dir,
  );
  assert.equal(state.step, step);
  readSafetensorsFile(join(dir, "adapter_model.safetensors"));
  JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8"));
}

const reference = join(tmp, "reference");
const refRun = train({}, reference);
assert.equal(refRun.code, 0, refRun.err);

describe("lora train on a full disk", () => {
  it("a checkpoint that cannot be written leaves the previous one intact, says so and how to resume; the resume ends as the uninterrupted run", () => {
    const out = join(tmp, "full-at-checkpoint");
    // each checkpoint writes 4 files: the 6th is the second file of step 4's checkpoint
    const r = train({ LORA_FULL_AT: "checkpoint-file:6" }, out);
    assert.equal(r.code, 1, r.err);
    assert.match(
      r.err,
      /could not save the checkpoint of step 4: ENOSPC.*; the previous checkpoint, of step 2 \(.*step-2\), is intact; free some space, then continue the run from step 2 with: lora train --resume .*full-at-checkpoint\n$/,
    );
    assert.equal(r.err.trim().split("\n").length, 1, "one line");
    assert.deepEqual(readdirSync(join(out, "checkpoints")), ["step-2"]); // no half-written step-4, no temporary folder
    assertWhole(join(out, "checkpoints/step-2"), 2);
    assert.ok(!existsSync(join(out, "adapter_model.safetensors")));

    const resumed = lora("train", "--resume", out);
    assert.equal(resumed.code, 0, resumed.err);
    assert.deepEqual(adapter(out), adapter(reference));
  });

  it("metrics.jsonl or the final adapter that cannot be written name the checkpoint to resume from; each resume picks up from there", () => {
    const out = join(tmp, "full-at-metrics");
    // the 5th metrics row is step 5's: the checkpoint of step 4 is the newest
    const r = train({ LORA_FULL_AT: "metrics:5" }, out);
    assert.equal(r.code, 1, r.err);
    assert.match(
      r.err,
      /metrics\.jsonl: cannot append: ENOSPC.*; free some space, then continue the run from step 4 with: lora train --resume /,
    );
    // the final adapter: every step done, its last checkpoint saved
    const atEnd = loraWith({ LORA_FULL_AT: "outputs:1" }, "train", "--resume", out);
    assert.equal(atEnd.code, 1, atEnd.err);
    assert.match(
      atEnd.err,
      /ENOSPC.*; free some space, then continue the run from step 6 with: lora train --resume /,
    );
    assert.ok(!existsSync(join(out, "adapter_model.safetensors")));
    const done = lora("train", "--resume", out);
    assert.equal(done.code, 0, done.err);
    assert.deepEqual(adapter(out), adapter(reference));
    const steps = readFileSync(join(out, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l).step);
    assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
  });

  it("a real full tmpfs: the newest complete checkpoint loads, and a resume after freeing space ends as the uninterrupted run", {
    skip:
      process.env.LORA_TEST_TMPFS !== "1"
        ? "opt-in: set LORA_TEST_TMPFS=1 (needs root, mounts a small tmpfs)"
        : process.getuid?.() !== 0
          ? "needs root to mount a tmpfs"
          : false,
  }, () => {
    const long = ["--steps", "40", "--save-every", "2", "--keep", "0"];
    const ref = join(tmp, "tmpfs-reference");
    assert.equal(train({}, ref, ...long).code, 0);
    const disk = join(tmp, "tmpfs");
    mkdirSync(disk);
    const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=160k", "tmpfs", disk], { encoding: "utf8" });
    assert.equal(m.status, 0, `mount failed: ${m.stderr}`);
    mounts.push(disk);
    const out = join(disk, "run");
    const r = train({}, out, ...long);
    assert.equal(r.code, 1, `the run fit in 160 KiB: ${r.err}`);
    assert.match(r.err, /ENOSPC|disk is full/);
    assert.match(r.err, /continue the run from step (\d+) with: lora train --resume /);
    const step = Number(/from step (\d+)/.exec(r.err)![1]);
    const names = readdirSync(join(out, "checkpoints"));
    assert.ok(!names.some((n) => n.startsWith(".tmp-")), `temporary folders left: ${names}`);
    for (const n of names) assertWhole(join(out, "checkpoints", n), Number(n.slice(5)));
    assert.ok(names.includes(`step-${step}`));
    assert.equal(spawnSync("mount", ["-o", "remount,size=8m", disk]).status, 0);
    const resumed = lora("train", "--resume", out);
    assert.equal(resumed.code, 0, resumed.err);
    assert.deepEqual(adapter(out), adapter(ref));
  });
});

/**
 * A folder that cannot be written: chmod 0555, or, as root (whom permissions do not stop), a
 * read-only tmpfs mounted there; null with the reason when neither works here.
 */
function readOnlyFolder(dir: string): string | null {
  mkdirSync(dir, { recursive: true });
  if (process.getuid?.() !== 0) {
    chmodSync(dir, 0o555);
    return null;
  }
  const m = spawnSync("mount", ["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", dir], { encoding: "utf8" });
  if (m.status !== 0)
    return `running as root, where chmod does not stop writes, and mount failed: ${m.stderr.trim()}`;
  mounts.push(dir);
  return null;
}
/** A run folder made read-only in place: chmod, or, as root, a read-only bind mount over it. */
function makeReadOnly(dir: string): string | null {
  if (process.getuid?.() !== 0) {
    chmodSync(join(dir, "checkpoints"), 0o555);
    chmodSync(dir, 0o555);
    return null;
  }
  const bind = spawnSync("mount", ["--bind", dir, dir], { encoding: "utf8" });
  if (bind.status !== 0)
    return `running as root, where chmod does not stop writes, and mount failed: ${bind.stderr.trim()}`;
  mounts.push(dir);
  const ro = spawnSync("mount", ["-o", "remount,ro,bind", dir], { encoding: "utf8" });
  return ro.status === 0 ? null : `remounting read-only failed: ${ro.stderr.trim()}`;
}

describe("lora train on a read-only --out", () => {
  it("refuses a read-only --out before it trains, naming the folder, and writes nothing", (t) => {
    const parent = join(tmp, "read-only");
    const why = readOnlyFolder(parent);
    if (why) return t.skip(why);
    const r = train({}, join(parent, "run"));
    assert.equal(r.code, 2, r.err);
    assert.match(
      r.err,
      /--out .*read-only\/run: cannot write in .*read-only \((a read-only file system|no write permission)\); nothing was trained or written: make that folder writable or choose another --out\n$/,
    );
    assert.deepEqual(readdirSync(parent), []);
  });

  it("refuses to resume a run whose folder became read-only", (t) => {
    // the reference run, done with: made read-only for this last test
    const why = makeReadOnly(reference);
    if (why) return t.skip(why);
    const r = lora("train", "--resume", reference, "--steps", "8");
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, /--resume .*reference: cannot write in .*reference \(/);
    assert.deepEqual(readdirSync(join(reference, "checkpoints")), ["step-2", "step-4", "step-6"]);
  });
});
