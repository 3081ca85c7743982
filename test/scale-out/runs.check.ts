/**
 * Real runs of what `lora scale-out` writes, on this machine's CPUs (`npm run test:scale-out`, opt-in:
 * minutes, not part of `npm test`; needs LORA_SCALEOUT_PYTHON, skips saying so without it):
 * - two CPU processes (gloo, loopback) launched by `accelerate launch` from the generated config, on
 *   the embedded base model: the world size really is 2, the adapter loads in `lora eval` and gives
 *   TRL's own final validation loss, and the loss curve is close to `lora train`'s with the same
 *   settings and seed (not equal: another data order and another A at the start);
 * - one process, --no-shuffle, SGD, both started from one adapter: every step's loss and gradient norm
 *   equal `lora train`'s to f32 tolerance; and the same with two processes (DDP's averaging).
 * The numbers are reported as test diagnostics.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, it } from "node:test";
import { assertClose, assertOk, lora, repoRoot } from "../helpers.js";
import { launch, PYTHON_MISSING } from "./python.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-scale-out-runs-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const model = resolve(repoRoot, "assets/base-model");
const task = resolve(repoRoot, "assets/task");
// 16 training rows (4 global batches of 4) and 8 validation rows of the embedded task
const data = join(tmp, "data");
const head = (file: string, n: number) =>
  readFileSync(join(task, file), "utf8").split("\n").slice(0, n).join("\n").concat("\n");
mkdirSync(data);
writeFileSync(join(data, "train.jsonl"), head("train.jsonl", 16));
writeFileSync(join(data, "valid.jsonl"), head("valid.jsonl", 8));

const COMMON = [
  "--model",
  model,
  "--data",
  data,
  "--seq-len",
  "64",
  "--batch-size",
  "4",
  "--base-dtype",
  "f32",
];

type Row = Record<string, number>;
const rows = (file: string): Row[] =>
  readFileSync(file, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Row);
/** Per-step training rows of a `lora train` run folder (metrics.jsonl: loss, grad_norm). */
const ours = (dir: string) => rows(join(dir, "metrics.jsonl")).filter((r) => r.loss !== undefined);
/** Per-step training rows train.py logged (the Trainer's logs: loss, grad_norm, learning_rate). */
const theirs = (dir: string) => rows(join(dir, "metrics.jsonl")).filter((r) => r.loss !== undefined);

function scaleOutRun(name: string, ...args: string[]) {
  const dir = join(tmp, name);
  assertOk(lora("scale-out", ...COMMON, "--out", dir, "--device", "cpu", ...args));
  const r = launch(dir);
  assert.equal(r.code, 0, `${r.out}\n${r.err}`);
  return { dir, log: `${r.out}\n${r.err}` };
}

function trainRun(name: string, ...args: string[]) {
  const dir = join(tmp, name);
  assertOk(lora("train", ...COMMON, "--out", dir, ...args));
  return dir;
}

const stats = (a: number[], b: number[]) => {
  const d = a.map((x, i) => Math.abs(x - b[i]!));
  return { mean: d.reduce((s, x) => s + x, 0) / d.length, max: Math.max(...d) };
};
const fmt = (xs: number[]) => xs.map((x) => x.toFixed(4)).join(" ");

describe("lora scale-out: real runs with accelerate + TRL", { skip: PYTHON_MISSING }, () => {
  // a started adapter (B ≠ 0), so that a run from it depends on both A and B from the first step
  let init = "";
  it("makes a starting adapter with lora train", () => {
    init = trainRun("init", "--steps", "2", "--lr", "0.01", "--eval-every", "0");
  });

  it("two CPU processes: world size 2 over gloo; the adapter loads in lora eval (TRL's validation loss), merge, export and generate; the loss curve is close to lora train's", (t) => {
    const settings = ["--steps", "24", "--lr", "0.005", "--seed", "3", "--eval-every", "0"];
    const hf = scaleOutRun("ddp2", ...settings, "--num-processes", "2");
    const world = JSON.parse(readFileSync(join(hf.dir, "world.json"), "utf8"));
    assert.deepEqual([world.world_size, world.backend], [2, "gloo"]);
    assert.match(hf.log, /scale-out: rank 0 of world_size 2, backend gloo/);
    assert.match(hf.log, /scale-out: rank 1 of world_size 2, backend gloo/);

    const ev = lora(
      "eval",
      "--model",
      model,
      "--adapter",
      join(hf.dir, "adapter"),
      "--data",
      data,
      "--split",
      "valid",
      "--seq-len",
      "64",
      "--base-dtype",
      "f32",
      "--json",
    );
    assertOk(ev);
    const evalLoss = JSON.parse(ev.out).loss as number;
    const trlEval = rows(join(hf.dir, "metrics.jsonl"))
      .filter((r) => r.eval_loss !== undefined)
      .at(-1)!.eval_loss!;
    t.diagnostic(
      `lora eval of the DDP adapter: ${evalLoss.toFixed(6)}; TRL's final eval_loss ${trlEval.toFixed(6)}`,
    );
    assertClose([evalLoss], [trlEval], "f32", "validation loss: lora eval vs TRL");

    // merge and export take the adapter folder as it is: the merged model gives the same loss
    const merged = join(tmp, "merged");
    assertOk(lora("merge", "--model", model, "--adapter", join(hf.dir, "adapter"), "--out", merged));
    const evMerged = lora(
      "eval",
      "--model",
      merged,
      "--data",
      data,
      "--split",
      "valid",
      "--seq-len",
      "64",
      "--base-dtype",
      "f32",
      "--json",
    );
    assertOk(evMerged);
    assertClose([JSON.parse(evMerged.out).loss], [evalLoss], "f32", "merged model vs adapter");
    assertOk(
      lora(
        "export",
        "--adapter",
        join(hf.dir, "adapter"),
        "--format",
        "gguf",
        "--model",
        model,
        "--out",
        join(tmp, "a.gguf"),
      ),
    );
    assertOk(
      lora(
        "generate",
        "--model",
        model,
        "--adapter",
        join(hf.dir, "adapter"),
        "--prompt",
        "The",
        "--max-tokens",
        "4",
      ),
    );

    const mine = trainRun("ddp2-ours", ...settings);
    const a = ours(mine).map((r) => r.loss!);
    const b = theirs(hf.dir).map((r) => r.loss!);
    assert.equal(b.length, 24);
    const s = stats(a, b);
    const last = (xs: number[]) => xs.slice(-8).reduce((x, y) => x + y, 0) / 8;
    t.diagnostic(`lora train loss:  ${fmt(a)}`);
    t.diagnostic(`accelerate (2 processes): ${fmt(b)}`);
    t.diagnostic(
      `|Δloss| mean ${s.mean.toFixed(4)}, max ${s.max.toFixed(4)}; mean of the last 8 steps ${last(a).toFixed(4)} vs ${last(b).toFixed(4)}`,
    );
    assert.ok(s.mean < 0.15, `mean |Δloss| ${s.mean}`);
    assert.ok(Math.abs(last(a) - last(b)) < 0.1, `last 8 steps ${last(a)} vs ${last(b)}`);
    // both learn: the end is below the start
    assert.ok(last(a) < a[0]! && last(b) < b[0]!);
  });

  for (const procs of [1, 2]) {
    it(`${procs} process(es), --no-shuffle, SGD, one starting adapter: every step equals lora train's to f32 tolerance`, (t) => {
      const settings = [
        "--adapter",
        init,
        "--optimizer",
        "sgd",
        "--no-shuffle",
        "--steps",
        "4",
        "--lr",
        "0.5",
        "--eval-every",
        "0",
      ];
      const hf = scaleOutRun(`sgd${procs}`, ...settings, "--num-processes", String(procs));
      assert.equal(JSON.parse(readFileSync(join(hf.dir, "world.json"), "utf8")).world_size, procs);
      const mine = ours(trainRun(`sgd${procs}-ours`, ...settings));
      const got = theirs(hf.dir);
      t.diagnostic(
        `lora train loss ${fmt(mine.map((r) => r.loss!))}, grad_norm ${fmt(mine.map((r) => r.grad_norm!))}`,
      );
      t.diagnostic(
        `accelerate loss ${fmt(got.map((r) => r.loss!))}, grad_norm ${fmt(got.map((r) => r.grad_norm!))}`,
      );
      const rel = Math.max(...mine.map((r, i) => Math.abs(r.loss! - got[i]!.loss!) / r.loss!));
      t.diagnostic(`largest relative loss difference ${rel.toExponential(2)}`);
      assertClose(
        got.map((r) => r.loss!),
        mine.map((r) => r.loss!),
        "f32",
        "loss per step",
      );
      assertClose(
        got.map((r) => r.grad_norm!),
        mine.map((r) => r.grad_norm!),
        "f32",
        "grad norm per step",
      );
    });
  }
});
