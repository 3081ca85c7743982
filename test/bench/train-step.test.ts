/** The bench's child entry on a toy model: it runs, and its JSON has the fields bench.ts reads. Never timing. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { parseBenchArgs, stepSpec } from "../../bench/args.js";
import { preset } from "../../bench/models.js";
import type { ChildResult } from "../../bench/spec.js";
import { readSafetensorsFile } from "../../src/node.js";
import { repoRoot } from "../helpers.js";

const CHILD = join(repoRoot, "dist", "bench", "train-step.js");

it("bench child: a tiny LoRA config reports throughput, memory, generation, GEMM shapes and writes its weights", () => {
  const opts = parseBenchArgs(["--models", "tiny", "--quick", "--steps", "2", "--no-torch"], "out.json")!;
  assert.equal(opts.torch, false);
  const spec = { ...stepSpec(preset("tiny"), opts), genTokens: 4 };
  const dir = mkdtempSync(join(tmpdir(), "bench-test-"));
  try {
    const r = spawnSync(process.execPath, [CHILD, JSON.stringify({ ...spec, weightsOut: dir })], {
      env: { ...process.env, LORA_BACKEND: "ref", LORA_THREADS: "1" },
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as ChildResult;
    assert.equal(out.side, "ours");
    assert.equal(out.backend, "ref");
    assert.equal(out.threads, 1);
    assert.equal(out.train.tokensPerStep, spec.batch * spec.seq);
    assert.equal(out.train.stepMs.length, 2);
    assert.equal(out.train.losses.length, spec.warmup + 2);
    assert.ok(out.train.losses.every(Number.isFinite));
    assert.ok(out.train.tokPerSec > 0 && out.train.peakRssMiB > 0 && out.finalRssMiB > 0);
    // r=8 on q_proj and v_proj (32 -> 32) of 2 layers: 2 * 2 * (8*32 + 32*8).
    assert.equal(out.train.trainableParams, 2048);
    assert.equal(out.gen?.newTokens, 4);
    assert.equal(out.gen?.tokens.length, 4);
    assert.ok(out.gemm && out.gemm.length > 0);
    for (const g of out.gemm) {
      assert.ok(g.callsPerStep >= 1 && g.M > 0 && g.N > 0 && g.K > 0 && g.ms >= 0, JSON.stringify(g));
    }
    const w = readSafetensorsFile(join(dir, "weights.safetensors"));
    assert.deepEqual(w.tensors.get("bench.input_ids")?.shape, [spec.batch, spec.seq]);
    assert.deepEqual(w.tensors.get("model.layers.0.self_attn.q_proj.lora_A")?.shape, [8, 32]);
    assert.ok(w.tensors.has("model.layers.0.self_attn.q_proj.base_layer.weight"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("bench options: lists, defaults and bad values", () => {
  const o = parseBenchArgs([], "x.json")!;
  assert.deepEqual([o.models, o.threads, o.steps, o.torch, o.quick], [["a", "b"], [1, 2], 5, true, false]);
  assert.equal(parseBenchArgs(["--help"], "x.json"), null);
  assert.throws(() => parseBenchArgs(["--threads", "0"], "x.json"), /--threads must be an integer >= 1/);
  assert.throws(() => parseBenchArgs(["--bogus"], "x.json"), /bogus/);
});
