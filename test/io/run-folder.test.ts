/**
 * The run folder's swap under failure: a move that fails midway is undone, a swap cut short by a crash is
 * finished by the next look at the folder, and files that no run listed are never taken for the run's.
 */
import assert from "node:assert/strict";
import fs, { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { after, describe, it } from "node:test";
import { inspectOut, RunFolder } from "../../src/io/node/run-folder.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-run-folder-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A finished run of ours: files, one checkpoint, the marker. */
function run(out: string, tag: string): RunFolder {
  const f = RunFolder.create(out, true);
  writeFileSync(join(f.dir, "adapter_model.safetensors"), tag);
  writeFileSync(join(f.dir, "metrics.jsonl"), `${tag}\n`);
  mkdirSync(join(f.dir, "checkpoints/step-1"), { recursive: true });
  writeFileSync(join(f.dir, "checkpoints/step-1/trainer_state.json"), "{}");
  f.record(["adapter_model.safetensors", "metrics.jsonl", "checkpoints"]);
  return f;
}
const content = (out: string) => readFileSync(join(out, "adapter_model.safetensors"), "utf8");
const siblings = (out: string) =>
  readdirSync(dirname(out)).filter((n) => n.startsWith(`.${basename(out)}.lora-`));

describe("RunFolder", () => {
  it("a failing move at any point of the swap is undone: the previous run is whole, the new one kept", () => {
    // every rename the swap makes, failed in turn (the journal's own write among them)
    for (let failAt = 1; ; failAt++) {
      const out = join(tmp, `fail-${failAt}`);
      run(out, "OLD").commit();
      const next = run(out, "NEW");
      const rename = fs.renameSync;
      let calls = 0;
      fs.renameSync = (a: fs.PathLike, b: fs.PathLike) => {
        if (++calls === failAt) throw Object.assign(new Error("EXDEV: cross-device link"), { code: "EXDEV" });
        rename(a, b);
      };
      let failed = true;
      try {
        next.commit();
        failed = false;
      } catch (e) {
        assert.match((e as Error).message, /EXDEV/);
      } finally {
        fs.renameSync = rename;
      }
      if (!failed) {
        assert.ok(failAt > 3, `the swap made only ${failAt - 1} renames`);
        assert.equal(content(out), "NEW");
        break;
      }
      assert.equal(content(out), "OLD", `failing rename ${failAt}`);
      assert.equal(readFileSync(join(out, "metrics.jsonl"), "utf8"), "OLD\n", `failing rename ${failAt}`);
      assert.ok(
        fs.existsSync(join(out, "checkpoints/step-1/trainer_state.json")),
        `failing rename ${failAt}`,
      );
      assert.equal(readFileSync(join(next.dir, "adapter_model.safetensors"), "utf8"), "NEW");
      assert.equal(inspectOut(out).kind, "run");
    }
  });

  it("a swap cut short by a crash is finished by the next run on the folder", () => {
    const out = join(tmp, "crash");
    run(out, "OLD").commit();
    const next = run(out, "NEW");
    // the state a kill -9 leaves after the journal and one move: one old file in the trash
    const trash = join(tmp, ".crash.lora-old-1-dead");
    mkdirSync(trash);
    writeFileSync(
      join(out, ".lora-commit.json"),
      JSON.stringify({
        staging: next.dir,
        trash,
        previous: ["adapter_model.safetensors", "metrics.jsonl", "checkpoints"],
      }),
    );
    fs.renameSync(join(out, "metrics.jsonl"), join(trash, "metrics.jsonl"));
    assert.equal(inspectOut(out).kind, "run");
    assert.equal(content(out), "NEW");
    assert.equal(readFileSync(join(out, "metrics.jsonl"), "utf8"), "NEW\n");
    assert.deepEqual(siblings(out), []);
    assert.ok(!fs.existsSync(join(out, ".lora-commit.json")));
  });

  it("a model or adapter file the marker does not list makes the folder someone else's", () => {
    const out = join(tmp, "mixed");
    const f = RunFolder.create(out, false);
    writeFileSync(join(f.dir, "metrics.jsonl"), "");
    f.record(["metrics.jsonl"]);
    writeFileSync(join(out, "adapter_model.safetensors"), "USER'S OWN");
    assert.deepEqual(inspectOut(out), { kind: "foreign", files: ["adapter_model.safetensors"] });
    assert.throws(
      () => RunFolder.create(out, true),
      /holds files that lora train did not write \(adapter_model/,
    );
    assert.throws(() => RunFolder.resume(out), /is not a run folder of lora train/);
    assert.equal(content(out), "USER'S OWN");
  });
});
