/**
 * The mapping checked against TRL and PEFT themselves: the generated train.py, run in its dry mode
 * (`--dump-config`), builds SFTConfig, LoraConfig and the optimizer from its plan, and every field the
 * plan sets comes out of TRL / PEFT with the value the settings say. Needs LORA_SCALEOUT_PYTHON (about
 * 30 s: importing torch and TRL); skips, saying so, without it.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, it } from "node:test";
import { planOf } from "../../src/scale-out/train-py.js";
import { assertOk, lora, repoRoot, writeJsonl } from "../helpers.js";
import { PYTHON_MISSING, python } from "./python.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-scale-out-dump-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("lora scale-out: train.py --dump-config, as TRL and PEFT resolve it", {
  skip: PYTHON_MISSING,
}, () => {
  it("every SFTConfig and LoraConfig field of the plan, and the optimizer", () => {
    const model = resolve(repoRoot, "assets/base-model");
    const data = join(tmp, "pc.jsonl");
    writeJsonl(data, [
      { prompt: "a", completion: " b" },
      { prompt: "c", completion: " d" },
    ]);
    const out = join(tmp, "out");
    const r = lora(
      "scale-out",
      ...["--model", model, "--data", data, "--out", out, "--device", "cpu", "--num-processes", "2"],
      ...["--rank", "4", "--alpha", "8", "--targets", "q_proj|v_proj", "--rslora"],
      ...["--optimizer", "sgd", "--lr", "0.05", "--schedule", "cosine", "--warmup", "1", "--epochs", "2"],
      ...["--batch-size", "2", "--grad-accum", "2", "--max-grad-norm", "0", "--seed", "7", "--mask-prompt"],
      ...["--keep", "2", "--save-every", "3"],
    );
    assertOk(r);
    const dumpPath = join(tmp, "dump.json");
    const d = python(out, ["train.py", "--dump-config", dumpPath]);
    assert.equal(d.code, 0, d.err);
    const dump = JSON.parse(readFileSync(dumpPath, "utf8"));
    const plan = planOf(readFileSync(join(out, "train.py"), "utf8"));

    for (const [k, v] of Object.entries(plan.sft_config)) {
      const got = dump.sft_config[k];
      if (k === "output_dir") assert.equal(got, join(out, "checkpoints"));
      else if (k === "max_length" && v === null)
        assert.equal(got, 512, "the model's max_position_embeddings");
      else if (k === "report_to") assert.deepEqual(got, [], "report_to none");
      else assert.deepEqual(got, v, `SFTConfig.${k}`);
    }
    // the values the flags set, as TRL holds them
    assert.equal(dump.sft_config.completion_only_loss, true);
    assert.equal(dump.sft_config.lr_scheduler_type, "cosine");
    assert.equal(dump.sft_config.per_device_train_batch_size, 1);
    assert.equal(dump.sft_config.max_grad_norm, 0);
    assert.equal(dump.sft_config.save_total_limit, 2);

    for (const [k, v] of Object.entries(plan.lora_config!))
      assert.deepEqual(dump.lora_config[k], v, `LoraConfig.${k}`);
    assert.equal(
      dump.lora_config.target_modules,
      "q_proj|v_proj",
      "a regex stays a string: PEFT full-matches it",
    );
    assert.equal(dump.lora_config.layers_to_transform, null);
    assert.deepEqual(dump.optimizer, { class: "torch.optim.sgd.SGD", kwargs: { lr: 0.05, weight_decay: 0 } });
    assert.equal(dump.model, model);
  });
});
