/** `lora train` and `lora merge` as a user runs them: the exactness contract, resume after kill -9, merge equality, bad input. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { readSafetensorsFile } from "../../src/io/node/safetensors-file.js";
import { serializeSafetensors, tensorToFloat32 } from "../../src/io/safetensors.js";
import { assertClose, CLI, fixtureModel, lora, SHARED_MISSING, sharedData, writeJsonl } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-train-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const model = fixtureModel;
const jsonl = writeJsonl;
const tensors = (file: string) =>
  new Map([...readSafetensorsFile(file).tensors].map(([k, t]) => [k, tensorToFloat32(t).slice()]));
const metrics = (dir: string) =>
  readFileSync(join(dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, number>);

/** `lora train` on the tiny Llama fixture and the pattern data. */
const trainTiny = (out: string, ...args: string[]) =>
  lora("train", "--model", model("llama_gqa_tied"), "--data", patternData, "--out", out, ...args);

/** A learnable folder dataset over ids every tiny fixture's vocabulary holds (>= 67). */
const patternData = join(tmp, "pattern");
mkdirSync(patternData);
const patternRow = (i: number) => ({
  input_ids: Array.from({ length: 16 + (i % 5) }, (_, t) => (5 * i + 3 * t) % 60),
});
jsonl(
  join(patternData, "train.jsonl"),
  Array.from({ length: 32 }, (_, i) => patternRow(i)),
);
jsonl(
  join(patternData, "valid.jsonl"),
  Array.from({ length: 6 }, (_, i) => patternRow(100 + i)),
);

describe("lora train: the exactness contract", () => {
  for (const name of ["llama_gqa_tied", "gpt2", "llama3_rope", "qwen3", "smollm3", "gemma3_text", "phi3"]) {
    it(`${name}: one SGD step from --adapter A0 is A0 - lr·dL/dA with PyTorch's gradient`, () => {
      const expected = JSON.parse(readFileSync(join(model(name), "expected.json"), "utf8"));
      const data = join(tmp, `${name}-ids.jsonl`);
      jsonl(
        data,
        expected.input_ids.map((ids: number[]) => ({ input_ids: ids })),
      );
      const out = join(tmp, `${name}-exact`);
      const lr = 0.5;
      const r = lora(
        "train",
        "--model",
        model(name),
        "--adapter",
        join(model(name), "adapter"),
        "--data",
        data,
        "--out",
        out,
        "--optimizer",
        "sgd",
        "--lr",
        String(lr),
        "--schedule",
        "constant",
        "--warmup",
        "0",
        "--weight-decay",
        "0",
        "--steps",
        "1",
        "--batch-size",
        String(expected.input_ids.length),
        "--no-shuffle",
        "--max-grad-norm",
        "0",
        "--dropout",
        "0",
        "--base-dtype",
        "f32", // the exact contract is for f32 base weights (auto may be bf16)
      );
      assert.equal(r.code, 0, r.err);
      const before = tensors(join(model(name), "adapter/adapter_model.safetensors"));
      const after = tensors(join(out, "adapter_model.safetensors"));
      assert.deepEqual([...after.keys()].sort(), Object.keys(expected.grads_adapter).sort());
      for (const [key, grad] of Object.entries(
        expected.grads_adapter as Record<string, { data: number[] }>,
      )) {
        const step = after.get(key)!.map((a, i) => (before.get(key)![i]! - a) / lr);
        assertClose(step, grad.data, "f32", key);
      }
      const first = metrics(out).find((m) => m.loss !== undefined)!;
      assertClose([first.loss!], [expected.loss_adapter], "f32", "loss");
    });
  }

  it("writes PEFT's adapter files: keys, layouts, metadata and config fields", () => {
    const out = join(tmp, "peft-gpt2");
    const r = lora(
      "train",
      "--model",
      model("gpt2"),
      "--data",
      patternData,
      "--out",
      out,
      "--steps",
      "2",
      "--rank",
      "4",
    );
    assert.equal(r.code, 0, r.err);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.equal(cfg.peft_type, "LORA");
    assert.equal(cfg.task_type, "CAUSAL_LM");
    assert.equal(cfg.r, 4);
    assert.equal(cfg.lora_alpha, 16);
    assert.deepEqual(cfg.target_modules, ["c_attn"]);
    assert.equal(cfg.bias, "none");
    assert.equal(cfg.use_rslora, false);
    assert.equal(cfg.fan_in_fan_out, true);
    assert.equal(cfg.base_model_name_or_path, model("gpt2"));
    const file = readSafetensorsFile(join(out, "adapter_model.safetensors"));
    assert.deepEqual(file.metadata, { format: "pt" });
    const A = file.tensors.get("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight")!;
    const B = file.tensors.get("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight")!;
    assert.deepEqual([A.shape, B.shape, A.dtype], [[4, 24], [72, 4], "F32"]);
    // The same folder loads back for eval.
    const e = lora("eval", "--model", model("gpt2"), "--adapter", out, "--data", patternData, "--json");
    assert.equal(e.code, 0, e.err);
  });
});

describe("lora train: progress, held-out loss, checkpoints", () => {
  it("lowers the held-out loss and logs every step to metrics.jsonl", () => {
    const out = join(tmp, "learn");
    const r = trainTiny(
      out,
      "--steps",
      "40",
      "--lr",
      "1e-2",
      "--eval-every",
      "20",
      "--save-every",
      "15",
      "--keep",
      "2",
    );
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /trainable params: 1,792 \|\| all params: 19,584 \|\| trainable%: 9\.1503/);
    assert.match(r.out, /step 40\/40 +loss [\d.]+ +lr [\d.e+-]+ +[\d,]+ tok\/s +ETA \S+ +peak [\d,]+ MiB/);
    assert.match(
      r.out,
      /done: 40 step\(s\), [\d,]+ tokens in [\d.]+ s of training \([\d,]+ tokens\/s; [\d.]+ s with evaluation and checkpoints\)/,
    );
    assert.match(r.out, /final train loss [\d.]+, validation loss [\d.]+/);
    const rows = metrics(out);
    const steps = rows.filter((m) => m.loss !== undefined);
    assert.deepEqual(
      steps.map((m) => m.step),
      Array.from({ length: 40 }, (_, i) => i + 1),
    );
    for (const m of steps) for (const k of ["lr", "tokens", "elapsed_s"]) assert.equal(typeof m[k], "number");
    assert.ok(steps.every((m, i) => i === 0 || m.tokens! > steps[i - 1]!.tokens!));
    const vals = rows.filter((m) => m.val_loss !== undefined);
    assert.deepEqual(
      vals.map((m) => m.step),
      [0, 20, 40],
    );
    assert.ok(
      vals[2]!.val_loss! < vals[0]!.val_loss! * 0.8,
      `val loss ${vals[0]!.val_loss} -> ${vals[2]!.val_loss}`,
    );
    assert.deepEqual(readdirSync(join(out, "checkpoints")).sort(), ["step-30", "step-40"]);
    for (const f of [
      "adapter_config.json",
      "adapter_model.safetensors",
      "optimizer.safetensors",
      "trainer_state.json",
    ])
      assert.ok(existsSync(join(out, "checkpoints/step-40", f)), f);
  });

  it("after kill -9, --resume gives the same losses and a bit-identical adapter", async () => {
    const args = (out: string) => [
      "train",
      "--model",
      model("llama_gqa_tied"),
      "--data",
      patternData,
      "--out",
      out,
      "--steps",
      "80",
      "--lr",
      "1e-2",
      "--dropout",
      "0.1",
      "--schedule",
      "cosine",
      "--warmup",
      "5",
      "--batch-size",
      "3",
      "--save-every",
      "10",
      "--eval-every",
      "0",
    ];
    const whole = join(tmp, "whole");
    assert.equal(lora(...args(whole)).code, 0);

    const killed = join(tmp, "killed");
    const child = spawn(process.execPath, [CLI, ...args(killed)], { stdio: "ignore" });
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.on("exit", (_c, sig) => resolve(sig)),
    );
    while (!existsSync(join(killed, "checkpoints/step-20")) && child.exitCode === null)
      await new Promise((r) => setTimeout(r, 5));
    child.kill("SIGKILL");
    assert.equal(await exited, "SIGKILL", "the run finished before it could be killed");
    assert.ok(!existsSync(join(killed, "adapter_model.safetensors")));

    const r = lora("train", "--resume", killed);
    assert.equal(r.code, 0, r.err);
    const losses = (dir: string) =>
      metrics(dir)
        .filter((m) => m.loss !== undefined)
        .map((m) => [m.step, m.loss]);
    assert.deepEqual(losses(killed), losses(whole));
    assert.deepEqual(
      readFileSync(join(killed, "adapter_model.safetensors")),
      readFileSync(join(whole, "adapter_model.safetensors")),
    );
  });

  it("takes settings from --config, flags overriding", () => {
    const cfg = join(tmp, "cfg.json");
    writeFileSync(
      cfg,
      JSON.stringify({ steps: 5, lr: 0.01, batch_size: 2, "eval-every": 0, targets: ["q_proj", "k_proj"] }),
    );
    const out = join(tmp, "from-config");
    const r = lora(
      "train",
      "--config",
      cfg,
      "--model",
      model("llama_gqa_tied"),
      "--data",
      patternData,
      "--out",
      out,
      "--steps",
      "3",
    );
    assert.equal(r.code, 0, r.err);
    assert.equal(metrics(out).filter((m) => m.loss !== undefined).length, 3);
    assert.deepEqual(JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")).target_modules, [
      "q_proj",
      "k_proj",
    ]);
  });

  it("--full trains every weight and writes a model folder that loads", () => {
    const out = join(tmp, "full");
    const r = trainTiny(out, "--full", "--steps", "3", "--lr", "1e-3");
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /trainable%: 100\.0000/);
    const e = lora("eval", "--model", out, "--data", patternData, "--json");
    assert.equal(e.code, 0, e.err);
  });
});

describe("lora merge", () => {
  const evalLoss = (...args: string[]) => {
    const r = lora("eval", ...args, "--data", patternData, "--json", "--base-dtype", "f32");
    assert.equal(r.code, 0, r.err);
    return JSON.parse(r.out).loss as number;
  };

  for (const name of ["llama_gqa_tied", "gpt2", "llama_untied"]) {
    it(`${name}: the merged folder evaluates as base + adapter`, () => {
      const out = join(tmp, `merged-${name}`);
      const r = lora(
        "merge",
        "--model",
        model(name),
        "--adapter",
        join(model(name), "adapter"),
        "--out",
        out,
      );
      assert.equal(r.code, 0, r.err);
      const merged = evalLoss("--model", out);
      const unmerged = evalLoss("--model", model(name), "--adapter", join(model(name), "adapter"));
      assert.ok(Math.abs(merged - unmerged) <= 1e-4 * Math.abs(unmerged), `${merged} vs ${unmerged}`);
      assert.notEqual(merged, evalLoss("--model", model(name)));
      // Same tensor names, shapes (GPT-2's Conv1D stays [in, out]) and dtypes as the base checkpoint.
      const header = (dir: string) =>
        [...readSafetensorsFile(join(dir, "model.safetensors")).tensors]
          .filter(([k]) => !/\.attn\.(bias|masked_bias)$/.test(k))
          .map(([k, t]) => [k, t.shape, t.dtype])
          .sort();
      assert.deepEqual(header(out), header(model(name)));
    });
  }

  it("keeps a 16-bit base in its dtype, and copies the tokenizer files", () => {
    const ok = (...args: string[]) => {
      const r = lora(...args);
      assert.equal(r.code, 0, r.err);
    };
    const trained = join(tmp, "bf16-adapter");
    ok("train", "--model", model("llama_bf16"), "--data", patternData, "--out", trained, "--steps", "2");
    const out = join(tmp, "merged-bf16");
    ok("merge", "--model", model("llama_bf16"), "--adapter", trained, "--out", out);
    const stored = readSafetensorsFile(join(out, "model.safetensors")).tensors.values();
    assert.deepEqual([...new Set([...stored].map((t) => t.dtype))], ["BF16"]);
    const stories = sharedData("stories260K-hf");
    if (!stories) return;
    const adapter = join(tmp, "stories-adapter");
    const data = join(tmp, "stories.txt");
    writeFileSync(data, "Once upon a time there was a cat.\n\nThe dog ran to the park.\n");
    ok("train", "--model", stories, "--data", data, "--out", adapter, "--steps", "2", "--lr", "0.01");
    const merged = join(tmp, "stories-merged");
    ok("merge", "--model", stories, "--adapter", adapter, "--out", merged);
    for (const f of ["tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"])
      assert.ok(existsSync(join(merged, f)), f);
  });

  it("refuses to overwrite a model or the base folder", () => {
    const out = join(tmp, "merged-llama_gqa_tied");
    const again = lora(
      "merge",
      "--model",
      model("llama_gqa_tied"),
      "--adapter",
      join(model("llama_gqa_tied"), "adapter"),
      "--out",
      out,
    );
    assert.equal(again.code, 2);
    assert.match(again.err, /already holds a model; pass --overwrite/);
    const base = lora(
      "merge",
      "--model",
      model("gpt2"),
      "--adapter",
      join(model("gpt2"), "adapter"),
      "--out",
      model("gpt2"),
    );
    assert.match(base.err, /must not overwrite the base model/);
  });
});

describe("lora train: bad input", () => {
  it("refuses an --out that holds another run unless --overwrite", () => {
    const out = join(tmp, "taken");
    assert.equal(trainTiny(out, "--steps", "1").code, 0);
    const adapter = readFileSync(join(out, "adapter_model.safetensors"));
    const r = trainTiny(out, "--steps", "1");
    assert.equal(r.code, 2);
    assert.match(
      r.err,
      /already holds a training run \(adapter_config\.json.*pass --resume .* to continue it, --overwrite to replace it/,
    );
    assert.deepEqual(readFileSync(join(out, "adapter_model.safetensors")), adapter);
    assert.equal(trainTiny(out, "--steps", "1", "--overwrite", "--seed", "3").code, 0);
  });

  it("refuses to resume with other settings or another model, saying what differs", () => {
    const out = join(tmp, "resume-check");
    assert.equal(trainTiny(out, "--steps", "2", "--save-every", "1").code, 0);
    const r = lora("train", "--resume", join(out, "checkpoints/step-1"), "--lr", "0.5", "--rank", "2");
    assert.equal(r.code, 2);
    // --lr may change on a resume; --rank may not
    assert.match(r.err, /other settings:\n {2}--rank: 8 in the checkpoint, 2 now\nDrop those flags/);
    const m = lora("train", "--resume", join(out, "checkpoints/step-1"), "--model", model("llama_untied"));
    assert.equal(m.code, 2);
    assert.match(m.err, /the checkpoint was made for another model \(config\.json differs in/);
  });

  it("refuses to resume when the data file changed under the same name", () => {
    const data = join(tmp, "changing.jsonl");
    jsonl(data, [patternRow(1), patternRow(2)]);
    const out = join(tmp, "resume-data");
    assert.equal(
      lora(
        "train",
        "--model",
        model("llama_gqa_tied"),
        "--data",
        data,
        "--out",
        out,
        "--steps",
        "3",
        "--save-every",
        "1",
      ).code,
      0,
    );
    jsonl(data, [patternRow(1), patternRow(3)]);
    const r = lora("train", "--resume", join(out, "checkpoints/step-1"));
    assert.equal(r.code, 2);
    assert.match(r.err, /the training data differs from the checkpoint's/);
  });

  it("stops at a non-finite loss, naming the step, and writes no adapter", () => {
    // An adapter whose B holds a huge finite value (a NaN is refused at load): the hidden states
    // overflow, and the very first loss is NaN, on every backend.
    const poisoned = join(tmp, "poisoned");
    cpSync(join(model("llama_gqa_tied"), "adapter"), poisoned, { recursive: true });
    const file = readSafetensorsFile(join(poisoned, "adapter_model.safetensors"));
    const key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight";
    const tensors = [...file.tensors].map(([name, t]) => {
      const data = tensorToFloat32(t).slice();
      if (name === key) data[0] = 3e38;
      return { name, dtype: "F32" as const, shape: t.shape, data };
    });
    writeFileSync(
      join(poisoned, "adapter_model.safetensors"),
      serializeSafetensors(tensors, { format: "pt" }),
    );
    const out = join(tmp, "diverge");
    const r = trainTiny(out, "--adapter", poisoned, "--steps", "3");
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      /the loss is NaN at step 1; stopped before updating the weights\. No checkpoint was saved yet: lower --lr/,
    );
    assert.ok(!existsSync(join(out, "adapter_model.safetensors")));
  });

  it("warns about truncated rows and names a malformed data line", () => {
    const out = join(tmp, "trunc");
    const r = trainTiny(out, "--steps", "1", "--seq-len", "8");
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /warning: .*pattern: 32 training row\(s\) longer than --seq-len 8 were truncated/);
    const bad = join(tmp, "bad.jsonl");
    writeFileSync(bad, '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, 2\n');
    const b = lora("train", "--model", model("llama_gqa_tied"), "--data", bad, "--out", join(tmp, "bad-out"));
    assert.equal(b.code, 1);
    assert.match(b.err, /bad\.jsonl:2/);
    const empty = join(tmp, "empty.jsonl");
    writeFileSync(empty, "");
    assert.match(
      lora("train", "--model", model("llama_gqa_tied"), "--data", empty, "--out", join(tmp, "e")).err,
      /empty\.jsonl/,
    );
  });

  it("keeps a long prompt/completion row's completion, cutting its prompt's start, and says so", {
    skip: !sharedData("stories260K-hf") && SHARED_MISSING,
  }, () => {
    const data = join(tmp, "prompts.jsonl");
    jsonl(data, [
      { prompt: "Once upon a time there was a very big dog who liked to run", completion: " fast." },
    ]);
    const r = lora(
      "train",
      "--model",
      sharedData("stories260K-hf")!,
      "--data",
      data,
      "--out",
      join(tmp, "masked"),
      "--mask-prompt",
      "--seq-len",
      "10",
      "--steps",
      "1",
    );
    assert.equal(r.code, 0, r.err);
    assert.match(
      r.err,
      /1 prompt\/completion row\(s\) longer than --seq-len 10 lost the start of their prompt/,
    );
  });

  it("says so when prompt masking leaves no token to predict", () => {
    const data = join(tmp, "one-token.jsonl");
    jsonl(data, [{ input_ids: [5] }]);
    const r = lora("train", "--model", model("llama_gqa_tied"), "--data", data, "--out", join(tmp, "one"));
    assert.equal(r.code, 1);
    assert.match(r.err, /no training row has a token to predict/);
  });
});

describe("lora params --model", () => {
  it("counts full and LoRA parameters per target type without loading weights", () => {
    const r = lora("params", "--model", model("llama_gqa_tied"), "--rank", "4", "--targets", "q_proj,v_proj");
    assert.equal(r.code, 0, r.err);
    // q_proj: 2 × [32, 32] -> 2·4·(32+32) = 512; v_proj: 2 × [16, 32] -> 2·4·(16+32) = 384
    assert.match(r.out, /self_attn\.q_proj +2 × 32x32 +2,048 +512 +4×/);
    assert.match(r.out, /self_attn\.v_proj +2 × 16x32 +1,024 +384/);
    assert.match(r.out, /trainable params: 896 \|\| all params: 18,688/);
  });
});
