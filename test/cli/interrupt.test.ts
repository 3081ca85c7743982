/**
 * Ctrl-C during `lora train`: the run ends after the step in progress with a checkpoint of exactly that
 * step and no final adapter, exits 130, and `--resume` from that checkpoint ends on the uninterrupted
 * run's bytes.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, it } from "node:test";
import { assertOk, CLI, fixtureModel, lora, tokenRows, writeJsonl } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-interrupt-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const data = join(tmp, "data");
mkdirSync(data);
writeJsonl(
  join(data, "train.jsonl"),
  tokenRows(32, 0, (i) => 16 + (i % 5)),
);
// a constant schedule: the number of steps planned changes no update, so a run stopped at step k and
// resumed to k + 3 can be compared with a run planned for k + 3 steps
const common = [
  "--model",
  fixtureModel("llama_gqa_tied"),
  "--data",
  data,
  "--schedule",
  "constant",
  "--batch-size",
  "2",
];

it("Ctrl-C checkpoints the step in progress and exits 130; --resume from it ends on the uninterrupted run's bytes", async () => {
  const out = join(tmp, "stopped");
  const child = spawn(
    process.execPath,
    [CLI, "train", ...common, "--out", out, "--steps", "100000", "--save-every", "100000"],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  const code = await new Promise<number | null>((resolve) => {
    child.stdout.on("data", (d) => {
      stdout += d;
      // the first progress line: training is under way
      if (/step 1\/100000/.test(stdout) && !child.killed) child.kill("SIGINT");
    });
    child.on("exit", (c) => resolve(c));
  });
  assert.equal(code, 130, stderr);
  assert.match(stderr, /stopping after this step/);
  const m = /stopped at step (\d+)\/100000; checkpoint (\S+): continue with lora train --resume \S+/.exec(
    stdout,
  );
  assert.ok(m, stdout);
  const k = Number(m[1]);
  assert.equal(m[2], join(out, "checkpoints", `step-${k}`));
  assert.ok(existsSync(join(m[2], "adapter_model.safetensors")), "the stopped step's checkpoint");
  assert.ok(!existsSync(join(out, "adapter_model.safetensors")), "no final adapter for a stopped run");

  assertOk(lora("train", ...common, "--resume", m[2], "--steps", String(k + 3)));
  const whole = join(tmp, "whole");
  assertOk(lora("train", ...common, "--out", whole, "--steps", String(k + 3)));
  assert.ok(
    readFileSync(join(out, "adapter_model.safetensors")).equals(
      readFileSync(join(whole, "adapter_model.safetensors")),
    ),
    `stopped at ${k}, resumed to ${k + 3}: the adapter differs from an uninterrupted ${k + 3}-step run's`,
  );
});
