/** The training loop through the library API: batching, accumulation, loss going down, exact resume, saving. */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { scale } from "../../src/autograd/ops.js";
import { checkpointFiles, parseCheckpoint } from "../../src/io/checkpoint.js";
import { listCheckpoints, writeCheckpoint } from "../../src/io/node/checkpoint-folder.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { adapterTensors } from "../../src/io/peft.js";
import { parseSafetensors } from "../../src/io/safetensors.js";
import { applyLoRA, setLoraDropout } from "../../src/lora/inject.js";
import { Rng } from "../../src/tensor/random.js";
import { Batcher, makeBatch, packRows } from "../../src/train/batches.js";
import type { TokenizedRow } from "../../src/train/data.js";
import { evaluate } from "../../src/train/evaluate.js";
import { IGNORE } from "../../src/train/loss.js";
import { createOptimizer } from "../../src/train/optim.js";
import { DivergedError, type Snapshot, type StepInfo, tokenLossSum, train } from "../../src/train/trainer.js";
import { assertClose, fixturesDir } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-trainer-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const MODEL = join(fixturesDir, "models/llama_gqa_tied");
const row = (ids: number[], mask = ids.map(() => 1)): TokenizedRow => ({ ids, mask });
/** Rows with a learnable pattern (each token predicts the next), over the fixture's 71-token vocabulary. */
const patternRows = (n: number, len: number, offset = 0) =>
  Array.from({ length: n }, (_, i) =>
    row(Array.from({ length: len - (i % 3) }, (_, t) => (5 * (i + offset) + 3 * t) % 71)),
  );

function loraModel(seed = 0, dropout = 0) {
  const { model } = loadModelFolder(MODEL);
  const rng = new Rng(seed);
  applyLoRA(
    model,
    {
      r: 4,
      lora_alpha: 8,
      lora_dropout: 0,
      target_modules: ["q_proj", "v_proj"],
      use_rslora: false,
      init_lora_weights: true,
    },
    { rng },
  );
  const dropoutRng = new Rng(99);
  if (dropout > 0) setLoraDropout(model, dropout, dropoutRng);
  return { model, dropoutRng };
}

describe("batches", () => {
  it("pads on the right and ignores padding, masked tokens and row ends", () => {
    const b = makeBatch([row([1, 2, 3]), row([4, 5, 6, 7, 8], [1, 0, 0, 1, 1])], 0);
    assert.deepEqual(b.shape, [2, 5]);
    assert.deepEqual([...b.ids], [1, 2, 3, 0, 0, 4, 5, 6, 7, 8]);
    const I = IGNORE;
    assert.deepEqual([...b.targets], [2, 3, I, I, I, I, I, 7, 8, I]);
    assert.equal(b.tokens, 4);
  });

  it("packs rows into fixed-length chunks, masks travelling with their tokens", () => {
    const packed = packRows([row([1, 2, 3], [0, 1, 1]), row([4, 5]), row([6, 7, 8, 9])], 4);
    assert.deepEqual(packed, [row([1, 2, 3, 4], [0, 1, 1, 1]), row([5, 6, 7, 8]), row([9])]);
  });

  it("visits every row once per epoch, in a seeded order, and resumes at a position", () => {
    const rows = Array.from({ length: 10 }, (_, i) => row([i, i]));
    const firstIds = (b: { ids: Int32Array; shape: [number, number] }) =>
      Array.from({ length: b.shape[0] }, (_, i) => b.ids[i * b.shape[1]]!);
    const a = new Batcher(rows, { batchSize: 3, shuffle: true, seed: 7 });
    assert.equal(a.batchesPerEpoch, 4);
    const epoch0 = Array.from({ length: 4 }, () => firstIds(a.next())).flat();
    assert.deepEqual(
      [...epoch0].sort((x, y) => x - y),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    assert.notDeepEqual(epoch0, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(a.position, { epoch: 1, cursor: 0 });
    const next = firstIds(a.next());
    const b = new Batcher(rows, { batchSize: 3, shuffle: true, seed: 7 }, { epoch: 1, cursor: 0 });
    assert.deepEqual(firstIds(b.next()), next);
    const plain = new Batcher(rows, { batchSize: 4, shuffle: false, seed: 7 });
    assert.deepEqual(firstIds(plain.next()), [0, 1, 2, 3]);
  });
});

describe("train()", () => {
  it("lowers the held-out loss of a small model", async () => {
    const { model } = loraModel();
    const rows = patternRows(16, 12);
    const val = patternRows(4, 12, 100);
    const optimizer = createOptimizer("adamw", model.trainableParameters(), { lr: 2e-2, weightDecay: 0 });
    const evals: number[] = [];
    const result = await train(model, {
      optimizer,
      data: new Batcher(rows, { batchSize: 4, shuffle: true, seed: 1 }),
      steps: 30,
      evaluate: () => evaluate(model, val).loss,
      evalEvery: 10,
      onEval: (e) => {
        evals.push(e.valLoss);
      },
    });
    assert.equal(evals.length, 4); // before, at 10, 20, and the end
    assert.ok(evals.at(-1)! < evals[0]! * 0.8, `val loss ${evals[0]} -> ${evals.at(-1)}`);
    assert.equal(result.valLoss, evals.at(-1));
  });

  it("gives one batch of 4 and 2 accumulated batches of 2 the same update", async () => {
    const rows = patternRows(4, 10);
    const update = async (batchSize: number, gradAccum: number) => {
      const { model } = loraModel();
      const optimizer = createOptimizer("sgd", model.trainableParameters(), { lr: 0.5 });
      await train(model, {
        optimizer,
        data: new Batcher(rows, { batchSize, shuffle: false, seed: 0 }),
        steps: 1,
        gradAccum,
      });
      return adapterTensors(model).flatMap((t) => [...(t.data as Float32Array)]);
    };
    assertClose(await update(2, 2), await update(4, 1), "f32", "accumulated vs whole batch");
  });

  it("resumes bit for bit from a snapshot, dropout and data order included", async () => {
    const rows = patternRows(10, 9);
    const run = async (resumeFrom?: Snapshot, crashAt?: number) => {
      const { model, dropoutRng } = loraModel(3, 0.1);
      const optimizer = createOptimizer("adamw", model.trainableParameters(), { lr: 1e-2 });
      if (resumeFrom) {
        for (const [name, p] of model.trainableParameters())
          p.data.set((resumeFrom as Snapshot & { w: Record<string, Float32Array> }).w[name]!);
        optimizer.loadStateDict(resumeFrom.optimizer);
      }
      const losses: number[] = [];
      let saved: Snapshot | undefined;
      try {
        await train(model, {
          optimizer,
          data: new Batcher(rows, { batchSize: 3, shuffle: true, seed: 5 }, resumeFrom?.data),
          steps: 8,
          schedule: { kind: "cosine", warmup: 2 },
          save: (s) => {
            const w = Object.fromEntries(model.trainableParameters().map(([n, p]) => [n, p.data.slice()]));
            saved = { ...s, w } as Snapshot;
          },
          saveEvery: 3,
          rng: dropoutRng,
          resume: resumeFrom,
          onStep: (i: StepInfo) => {
            losses.push(i.loss);
            if (i.step === crashAt) throw new Error("crash");
          },
        });
      } catch (e) {
        if ((e as Error).message !== "crash") throw e;
      }
      return {
        losses,
        saved: saved!,
        weights: adapterTensors(model).map((t) => (t.data as Float32Array).slice()),
      };
    };
    const whole = await run();
    const crashed = await run(undefined, 5); // last snapshot: step 3
    assert.equal(crashed.saved.step, 3);
    const resumed = await run(crashed.saved);
    assert.deepEqual([...crashed.losses.slice(0, 3), ...resumed.losses], whole.losses);
    assert.deepEqual(resumed.weights, whole.weights);
  });

  it("stops at a non-finite loss before updating, after the last good snapshot", async () => {
    const { model } = loraModel();
    const optimizer = createOptimizer("adamw", model.trainableParameters(), { lr: 1e-2 });
    const saved: number[] = [];
    let before: Float32Array[] = [];
    let calls = 0;
    await assert.rejects(
      train(model, {
        optimizer,
        data: new Batcher(patternRows(8, 9), { batchSize: 2, shuffle: false, seed: 0 }),
        steps: 10,
        loss: (m, b) => {
          if (++calls === 5) {
            before = m.trainableParameters().map(([, p]) => p.data.slice());
            return scale(tokenLossSum(m, b), Number.NaN);
          }
          return tokenLossSum(m, b);
        },
        save: (s) => void saved.push(s.step),
        saveEvery: 2,
      }),
      (e: Error) => e instanceof DivergedError && e.step === 5 && /the loss is NaN at step 5/.test(e.message),
    );
    assert.deepEqual(saved, [2, 4]);
    assert.deepEqual(
      model.trainableParameters().map(([, p]) => p.data),
      before,
    );
  });
});

describe("non-finite updates are never saved", () => {
  it("stops when a finite gradient's update makes a weight non-finite, saving nothing of that step", async () => {
    const { model } = loraModel();
    const optimizer = createOptimizer("sgd", model.trainableParameters(), { lr: 1e-2 });
    const step = optimizer.step.bind(optimizer);
    let n = 0;
    // the 3rd update overflows, as a huge learning rate does
    optimizer.step = () => {
      step();
      if (++n === 3) optimizer.params[0]![1].data[0] = Number.POSITIVE_INFINITY;
    };
    const saved: number[] = [];
    await assert.rejects(
      train(model, {
        optimizer,
        data: new Batcher(patternRows(8, 9), { batchSize: 2, shuffle: false, seed: 0 }),
        steps: 6,
        save: (s) => void saved.push(s.step),
        saveEvery: 1,
      }),
      (e: Error) =>
        e instanceof DivergedError && e.step === 3 && /the update made .*lora_A.* non-finite/.test(e.message),
    );
    assert.deepEqual(saved, [1, 2]);
  });

  it("refuses to snapshot a non-finite optimizer moment", async () => {
    const { model } = loraModel();
    const optimizer = createOptimizer("adamw", model.trainableParameters(), { lr: 1e-3 });
    const stateDict = optimizer.stateDict.bind(optimizer);
    optimizer.stateDict = () => {
      const s = stateDict();
      const first = Object.values(s.buffers)[0]!;
      Object.values(first)[0]![0] = Number.NaN;
      return s;
    };
    const saved: number[] = [];
    await assert.rejects(
      train(model, {
        optimizer,
        data: new Batcher(patternRows(8, 9), { batchSize: 2, shuffle: false, seed: 0 }),
        steps: 2,
        save: (s) => void saved.push(s.step),
        saveEvery: 1,
      }),
      /the optimizer state .* is not finite at step 1; this step is not saved/,
    );
    assert.deepEqual(saved, []);
  });
});

describe("checkpoint files", () => {
  const snapshot: Parameters<typeof checkpointFiles>[0] = {
    step: 4,
    tokens: 100,
    elapsedS: 1.5,
    data: { epoch: 1, cursor: 2 },
    rng: { s: [1, 2, 3, 4], spare: 0.5 },
    optimizer: {
      kind: "adamw",
      step: 4,
      buffers: { "a.lora_A.weight": { m: new Float32Array([1, 2]), v: new Float32Array([3, 4]) } },
    },
  };

  it("round-trips the optimizer state and progress", () => {
    const files = checkpointFiles(snapshot, { settings: { lr: 1 } });
    const back = parseCheckpoint(
      JSON.parse(files["trainer_state.json"] as string),
      parseSafetensors(files["optimizer.safetensors"] as Uint8Array, "optimizer.safetensors"),
      "ckpt",
    );
    assert.deepEqual(back, { ...snapshot, run: { settings: { lr: 1 } } });
  });

  it("keeps the previous checkpoint whole when the disk fills up mid-save, and prunes to --keep", () => {
    const run = join(tmp, "disk-full");
    for (const step of [1, 2, 3])
      writeCheckpoint(run, step, checkpointFiles({ ...snapshot, step }, {}), { keep: 2 });
    assert.deepEqual(
      listCheckpoints(run).map((c) => c.step),
      [2, 3],
    );
    let calls = 0;
    const full = () => {
      if (++calls === 2)
        throw Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" });
    };
    assert.throws(
      () => writeCheckpoint(run, 4, checkpointFiles({ ...snapshot, step: 4 }, {}), { keep: 2, write: full }),
      /could not save the checkpoint of step 4: ENOSPC.*the previous checkpoint, of step 3 \(.*step-3\), is intact/,
    );
    assert.deepEqual(
      listCheckpoints(run).map((c) => c.step),
      [2, 3],
    );
    assert.deepEqual(readdirSync(join(run, "checkpoints")).sort(), ["step-2", "step-3"]);
    const state = JSON.parse(readFileSync(join(run, "checkpoints/step-3/trainer_state.json"), "utf8"));
    assert.equal(state.step, 3);
    assert.ok(existsSync(join(run, "checkpoints/step-3/optimizer.safetensors")));
  });
});
