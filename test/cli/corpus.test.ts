/**
 * The hostile-file corpus (test/corpus/manifest.json, written by scripts/make-corpus.ts), each file run
 * through `lora` as a user runs it: a non-zero exit, one message (one line, or a line and its list of
 * problems) holding the expected fragment, no stack trace without --debug (and one with it), and
 * nothing left behind where the command would have written its output. Runs the cases in parallel.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { CLI, fixturesDir, repoRoot } from "../helpers.js";

interface Case {
  file: string;
  why: string;
  args: string[];
  expect: string;
}
const corpus = join(repoRoot, "test/corpus");
const { cases } = JSON.parse(readFileSync(join(corpus, "manifest.json"), "utf8")) as { cases: Case[] };
const tmp = mkdtempSync(join(tmpdir(), "lora-corpus-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

interface Run {
  code: number | null;
  err: string;
  out: string;
  ms: number;
  outPath: string;
}

function run(c: Case, i: number, extra: string[] = []): Promise<Run> {
  const outPath = join(tmp, `out-${i}-${extra.length}`);
  const args = c.args.map((a) =>
    a
      .replace("{case}", join(corpus, c.file))
      .replace("{fixtures}", fixturesDir)
      .replace("{corpus}", corpus)
      .replace("{out}", outPath),
  );
  const start = performance.now();
  return new Promise((resolve) => {
    // one thread each: the cases run side by side
    const child = spawn(process.execPath, [CLI, ...args, ...extra], {
      env: { ...process.env, LORA_THREADS: "1" },
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("close", (code) => resolve({ code, err, out, ms: performance.now() - start, outPath }));
  });
}

/** Runs every job, `width` at a time. */
async function pool<T>(jobs: Array<() => Promise<T>>, width: number): Promise<T[]> {
  const results: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]!();
    }
  };
  await Promise.all(Array.from({ length: width }, worker));
  return results;
}

const STACK = /^\s+at .+(:\d+:\d+\)?|\(native\))$/m;

describe("the hostile-file corpus, through the CLI", () => {
  it(`every one of the ${cases.length} cases fails cleanly: exit != 0, one message naming the problem, no trace, no output`, async () => {
    const width = Math.max(2, Math.min(8, availableParallelism()));
    const runs = await pool(
      cases.map((c, i) => () => run(c, i)),
      width,
    );
    const failures: string[] = [];
    let oneLine = 0;
    for (const [i, c] of cases.entries()) {
      const r = runs[i]!;
      const lines = r.err.trim().split("\n");
      const cmd = c.args[0];
      const problems = [
        r.code === 0 || r.code === null ? `exit code ${r.code}` : "",
        lines[0]!.startsWith(`lora ${cmd}: `) ? "" : `the message does not start "lora ${cmd}: "`,
        r.err.includes(c.expect) ? "" : `the message lacks ${JSON.stringify(c.expect)}`,
        STACK.test(r.err) ? "a stack trace without --debug" : "",
        // a list of problems follows its first line as "  - ..." items and a line of advice
        lines.length <= 25 && lines.slice(1).every((l) => /^ {2}(- |\.\.\. )/.test(l) || !/^\s/.test(l))
          ? ""
          : `not one message (${lines.length} lines)`,
        existsSync(r.outPath) ? `left ${r.outPath} behind` : "",
      ].filter(Boolean);
      if (lines.length === 1) oneLine++;
      if (problems.length) failures.push(`${c.file} (${c.why}): ${problems.join("; ")}\n${r.err}`);
    }
    console.log(
      `corpus: ${cases.length} cases, ${cases.length - failures.length} failed cleanly (${oneLine} in one line); slowest ${Math.max(...runs.map((r) => r.ms)).toFixed(0)} ms`,
    );
    assert.deepEqual(failures, []);
  });

  it("--debug prints the stack trace that is otherwise left out", async () => {
    const c = cases.find((x) => x.file === "st-overlap")!;
    const r = await run(c, 0, ["--debug"]);
    assert.notEqual(r.code, 0);
    assert.match(r.err, STACK);
    assert.match(r.err, /overlap/);
  });

  it("a config claiming a 10^12-entry vocabulary is refused in milliseconds, before anything is built", async () => {
    const { checkModelTensors } = await import("../../src/io/model-loader.js");
    const config = JSON.parse(readFileSync(join(corpus, "config-vocab-1e12/config.json"), "utf8"));
    const layers = JSON.parse(readFileSync(join(corpus, "config-290M-layers/config.json"), "utf8"));
    for (const cfg of [config, layers]) {
      const start = performance.now();
      assert.throws(
        () => checkModelTensors(cfg, new Map(), "m", { memoryLimit: 2 ** 34 }),
        /vocab_size|need at least/,
      );
      const ms = performance.now() - start;
      assert.ok(ms < 200, `took ${ms.toFixed(1)} ms`);
    }
  });
});
