/**
 * `lora scale-out` without Python: the files it writes, the settings → TRL / PEFT / accelerate mapping
 * checked field by field in the generated train.py's plan, the accelerate config per strategy, the
 * data converted one to one, and what is refused or reported as not identical.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, it } from "node:test";
import { parse } from "yaml";
import { accelerateConfigYaml } from "../../src/scale-out/accelerate-config.js";
import { dataFormat } from "../../src/scale-out/data.js";
import { type DataFormat, type EngineOptions, enginePlan } from "../../src/scale-out/mapping.js";
import { requirementsTxt } from "../../src/scale-out/requirements.js";
import { planOf } from "../../src/scale-out/train-py.js";
import { SETTINGS, settingsFrom } from "../../src/train/settings.js";
import { assertOk, lora, repoRoot, writeJsonl } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-scale-out-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const model = resolve(repoRoot, "assets/base-model");
const textData = join(tmp, "text.jsonl");
writeJsonl(
  textData,
  Array.from({ length: 6 }, (_, i) => ({ text: `row ${i}: it's a "quoted" line` })),
);
const pcData = join(tmp, "pc.jsonl");
writeJsonl(pcData, [
  { prompt: "Q: 1+1?", completion: " 2" },
  { prompt: "Q: 2+2?", completion: " 4" },
]);
const chatData = join(tmp, "chat.jsonl");
writeJsonl(chatData, [
  {
    messages: [
      { role: "user", content: "hi" },
      { role: "assistant", content: "hello" },
    ],
  },
]);

let n = 0;
let mainRun = { dir: "" };
function scaleOut(...args: string[]) {
  const out = join(tmp, `out-${n++}`);
  const r = lora("scale-out", "--model", model, "--out", out, ...args);
  return { ...r, dir: out };
}
const read = (dir: string, f: string) => readFileSync(join(dir, f), "utf8");

describe("lora scale-out: settings → engine, field by field", () => {
  const flags = [
    ["--data", textData],
    ["--rank", "4"],
    ["--alpha", "12"],
    ["--dropout", "0.1"],
    ["--targets", "q_proj,k_proj,o_proj"],
    ["--layers", "0,2-3"],
    ["--rslora"],
    ["--init", "gaussian"],
    ["--optimizer", "adam"],
    ["--lr", "0.003"],
    ["--weight-decay", "0.01"],
    ["--schedule", "constant"],
    ["--warmup", "2"],
    ["--steps", "7"],
    ["--batch-size", "6"],
    ["--grad-accum", "3"],
    ["--seq-len", "48"],
    ["--max-grad-norm", "0.5"],
    ["--seed", "42"],
    ["--no-shuffle"],
    ["--pack"],
    ["--save-every", "5"],
    ["--keep", "0"],
    ["--base-dtype", "bf16"],
    ["--device", "cpu"],
    ["--num-processes", "2"],
  ].flat();
  const r = scaleOut(...flags);
  mainRun = r;

  it("writes train.py, accelerate_config.yaml, requirements.txt, README.md and the data", () => {
    assertOk(r);
    for (const f of [
      "train.py",
      "accelerate_config.yaml",
      "requirements.txt",
      "README.md",
      "data/train.jsonl",
    ])
      assert.ok(read(r.dir, f).length > 0, f);
  });

  it("puts every given setting into the PEFT / TRL / torch field that holds it", () => {
    const p = planOf(read(r.dir, "train.py"));
    assert.equal(p.model, model);
    assert.equal(p.model_dtype, "bfloat16");
    assert.deepEqual(p.lora_config, {
      r: 4,
      lora_alpha: 12,
      lora_dropout: 0.1,
      target_modules: ["q_proj", "k_proj", "o_proj"],
      layers_to_transform: [0, 2, 3],
      use_rslora: true,
      init_lora_weights: "gaussian",
      use_dora: false,
      modules_to_save: null,
      trainable_token_indices: null,
      bias: "none",
      task_type: "CAUSAL_LM",
    });
    assert.deepEqual(p.optimizer, {
      class: "Adam",
      kwargs: { lr: 0.003, weight_decay: 0.01, betas: [0.9, 0.999], eps: 1e-8 },
    });
    const c = p.sft_config;
    const expected: Record<string, unknown> = {
      learning_rate: 0.003,
      weight_decay: 0.01,
      lr_scheduler_type: "constant_with_warmup",
      warmup_steps: 2,
      max_steps: 7,
      // the global batch stays --batch-size: 6 rows over 2 processes
      per_device_train_batch_size: 3,
      gradient_accumulation_steps: 3,
      max_length: 48,
      max_grad_norm: 0.5,
      seed: 42,
      data_seed: 42,
      train_sampling_strategy: "sequential",
      packing: true,
      packing_strategy: "wrapped",
      save_steps: 5,
      save_total_limit: null,
      use_cpu: true,
      bf16: false,
      fp16: false,
      completion_only_loss: false,
      assistant_only_loss: false,
      eval_strategy: "no",
    };
    for (const [k, v] of Object.entries(expected)) assert.deepEqual(c[k], v, `SFTConfig.${k}`);
    assert.equal(p.resolve.global_batch_size, 6);
    assert.deepEqual(p.world, { num_processes: 2, strategy: "ddp", device: "cpu", mixed_precision: "no" });
  });

  it("two CPU processes: MULTI_GPU with use_cpu (gloo), as accelerate 1.x needs; 'no' stays a string", () => {
    const text = read(r.dir, "accelerate_config.yaml");
    const c = parse(text, { version: "1.1" }) as Record<string, unknown>;
    assert.equal(c.distributed_type, "MULTI_GPU");
    assert.equal(c.num_processes, 2);
    assert.equal(c.use_cpu, true);
    assert.equal(c.mixed_precision, "no");
    assert.match(text, /mixed_precision: "no"/);
  });

  it("the README has the launch command and every difference, which the command also prints", () => {
    const md = read(r.dir, "README.md");
    assert.ok(md.includes("accelerate launch --config_file accelerate_config.yaml train.py\n"));
    for (const topic of ["init", "dropout", "pack", "base-dtype", "num-processes", "save-every"]) {
      assert.ok(md.includes(`- \`--${topic}\`:`), `README lists --${topic}`);
      assert.ok(r.err.includes(`  --${topic}: `), `printed: --${topic}`);
    }
    // --no-shuffle was given: the order is the same, so it is not listed
    assert.ok(!md.includes("- `--no-shuffle`"));
  });

  it("the data is converted one to one", () => {
    assert.equal(read(r.dir, "data/train.jsonl"), readFileSync(textData, "utf8"));
  });

  it("a --config file is read through the settings table, and flags override it", () => {
    const config = join(tmp, "run.json");
    writeFileSync(
      config,
      JSON.stringify({
        data: textData,
        rank: 4,
        targets: ["q_proj", "k_proj", "o_proj"],
        lr: 0.001,
        no_shuffle: true,
      }),
    );
    const a = scaleOut("--config", config, "--device", "cpu", "--lr", "0.003");
    assertOk(a);
    const p = planOf(read(a.dir, "train.py"));
    assert.equal(p.lora_config?.r, 4);
    assert.deepEqual(p.lora_config?.target_modules, ["q_proj", "k_proj", "o_proj"]);
    assert.equal(p.sft_config.learning_rate, 0.003);
    assert.equal(p.optimizer.kwargs.lr, 0.003);
    assert.equal(p.sft_config.train_sampling_strategy, "sequential");
    assert.equal(p.data.format, "text");
  });

  it("defaults: PEFT's own target_modules, AdamW, linear, epochs counted by train.py", () => {
    const p = enginePlan(
      settingsFrom({ model, out: tmp, data: textData }),
      { strategy: "ddp", numProcesses: 1, mixedPrecision: "no", device: "gpu" },
      { format: "text", train: "t", valid: null },
      model,
    );
    assert.equal(p.lora_config?.target_modules, null);
    assert.equal(p.lora_config?.r, SETTINGS.rank.def);
    assert.equal(p.optimizer.class, "AdamW");
    assert.equal(p.sft_config.lr_scheduler_type, "linear");
    assert.equal(p.sft_config.max_steps, -1);
    assert.equal(p.resolve.epochs, 1);
    assert.equal(p.sft_config.train_sampling_strategy, "random");
    assert.equal(p.sft_config.use_cpu, false);
    assert.equal(p.model_dtype, "float32");
    const c = parse(
      accelerateConfigYaml({ strategy: "ddp", numProcesses: 1, mixedPrecision: "no", device: "gpu" }),
      { version: "1.1" },
    ) as Record<string, unknown>;
    assert.equal(c.distributed_type, "NO");
    assert.equal(c.use_cpu, false);
  });
});

describe("lora scale-out: prompt masking as TRL names it", () => {
  const settings = (v: Record<string, string | boolean>) => settingsFrom({ model, out: tmp, ...v });
  const ENGINE = { strategy: "ddp", numProcesses: 1, mixedPrecision: "no", device: "cpu" } as const;
  const sft = (format: DataFormat, v: Record<string, string | boolean> = {}) =>
    enginePlan(settings({ data: "x", ...v }), ENGINE, { format, train: "t", valid: null }, model).sft_config;
  it("prompt/completion: completion_only_loss True with --mask-prompt, False (not None) without", () => {
    const r = scaleOut("--device", "cpu", "--data", pcData, "--mask-prompt");
    assertOk(r);
    assert.equal(planOf(read(r.dir, "train.py")).sft_config.completion_only_loss, true);
    assert.equal(sft("prompt-completion").completion_only_loss, false);
    assert.equal(sft("prompt-completion").assistant_only_loss, false);
    assert.ok(r.err.includes("  --data: prompt/completion rows"));
  });
  it("messages: assistant_only_loss, and the {% generation %} caveat is printed", () => {
    const r = scaleOut("--device", "cpu", "--data", chatData, "--mask-prompt");
    assertOk(r);
    assert.equal(planOf(read(r.dir, "train.py")).sft_config.assistant_only_loss, true);
    assert.ok(r.err.includes("{% generation %}"));
    assert.equal(sft("messages").assistant_only_loss, false);
    assert.equal(sft("messages", { "mask-prompt": true }).completion_only_loss, false);
    assert.equal(read(r.dir, "data/train.jsonl"), readFileSync(chatData, "utf8"));
  });
  it("text and input_ids rows: neither mask", () => {
    for (const f of ["text", "input_ids"] as const) {
      assert.equal(sft(f, { "mask-prompt": true }).completion_only_loss, false);
      assert.equal(sft(f, { "mask-prompt": true }).assistant_only_loss, false);
    }
  });
});

/** The parts of an accelerate config these tests read. */
type AccelerateYaml = Record<string, unknown> & {
  fsdp_config: Record<string, unknown>;
  deepspeed_config: Record<string, unknown>;
};

describe("lora scale-out: strategies", () => {
  const config = (o: Partial<EngineOptions>) =>
    parse(
      accelerateConfigYaml({ strategy: "ddp", numProcesses: 2, mixedPrecision: "no", device: "gpu", ...o }),
      { version: "1.1" },
    ) as AccelerateYaml;
  it("fsdp: FSDP version 2, full state dict for the adapter", () => {
    const c = config({ strategy: "fsdp", numProcesses: 4, mixedPrecision: "bf16" });
    assert.equal(c.distributed_type, "FSDP");
    assert.equal(c.fsdp_config.fsdp_version, 2);
    assert.equal(c.fsdp_config.fsdp_state_dict_type, "FULL_STATE_DICT");
    assert.equal(c.mixed_precision, "bf16");
    assert.equal(c.num_processes, 4);
  });
  it("deepspeed-zero2 / zero3: DEEPSPEED with the stage; requirements.txt adds deepspeed", () => {
    assert.equal(config({ strategy: "deepspeed-zero2" }).distributed_type, "DEEPSPEED");
    assert.equal(config({ strategy: "deepspeed-zero2" }).deepspeed_config.zero_stage, 2);
    const c = config({ strategy: "deepspeed-zero3" });
    assert.equal(c.deepspeed_config.zero_stage, 3);
    assert.equal(c.deepspeed_config.zero3_init_flag, true);
    assert.match(requirementsTxt("deepspeed-zero3"), /^deepspeed/m);
    assert.doesNotMatch(requirementsTxt("ddp"), /deepspeed/);
    assert.match(requirementsTxt("ddp"), /^trl==1\.13\.0$/m);
  });
  it("GPUs: use_cpu false, every GPU", () => {
    const c = config({});
    assert.equal(c.distributed_type, "MULTI_GPU");
    assert.equal(c.use_cpu, false);
    assert.equal(c.gpu_ids, "all");
  });
});

describe("lora scale-out: refusals", () => {
  const refused = (re: RegExp, ...args: string[]) => {
    const r = scaleOut(...args);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, re);
  };
  const plan = (v: Record<string, string | boolean>, numProcesses = 1) =>
    enginePlan(
      settingsFrom({ model, out: tmp, data: "x", ...v }),
      { strategy: "ddp", numProcesses, mixedPrecision: "no", device: "cpu" },
      { format: "text", train: "t", valid: null },
      model,
    );
  it("a batch that does not split over the processes", () =>
    refused(
      /--batch-size 3 does not split over --num-processes 2/,
      ...["--data", textData, "--batch-size", "3", "--num-processes", "2"],
    ));
  it("--full", () => assert.throws(() => plan({ full: true }), /--full is not mapped/));
  it("--convert-to-lora, which train.py cannot do at save time", () =>
    assert.throws(() => plan({ init: "pissa", "convert-to-lora": true }), /--convert-to-lora is not mapped/));
  it("DoRA, PiSSA/OLoRA, modules_to_save and trainable tokens reach LoraConfig by PEFT's names", () => {
    const c = plan({
      dora: true,
      init: "pissa_niter_4",
      "modules-to-save": "lm_head,norm",
      "trainable-tokens": "3,5-6",
    }).lora_config;
    assert.equal(c?.use_dora, true);
    assert.equal(c?.init_lora_weights, "pissa_niter_4");
    assert.deepEqual(c?.modules_to_save, ["lm_head", "norm"]);
    assert.deepEqual(c?.trainable_token_indices, [3, 5, 6]);
    assert.equal(plan({ init: "kaiming" }).lora_config?.init_lora_weights, true);
    assert.equal(plan({ init: "olora" }).lora_config?.init_lora_weights, "olora");
  });
  it("--layers with a regex or all-linear --targets, which PEFT refuses", () => {
    assert.throws(() => plan({ targets: "q_proj|v_proj", layers: "0" }), /PEFT refuses layers_to_transform/);
    assert.throws(() => plan({ targets: "all-linear", layers: "0" }), /PEFT refuses layers_to_transform/);
    assert.deepEqual(plan({ targets: "q_proj", layers: "0" }).lora_config?.layers_to_transform, [0]);
  });
  it("DeepSpeed on CPU, an unknown strategy", () => {
    refused(/needs GPUs/, "--data", textData, "--strategy", "deepspeed-zero2", "--device", "cpu");
  });
  it("--overwrite replaces only scale-out's own files: a folder holding another file is refused, untouched", () => {
    const out = join(tmp, "foreign");
    mkdirSync(out);
    writeFileSync(join(out, "notes.txt"), "mine");
    const r = lora("scale-out", "--model", model, "--data", textData, "--out", out, "--overwrite");
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, /holds files lora scale-out did not write \(notes\.txt\)/);
    assert.equal(readFileSync(join(out, "notes.txt"), "utf8"), "mine");
    const own = scaleOut("--data", textData);
    assertOk(own);
    assertOk(lora("scale-out", "--model", model, "--data", textData, "--out", own.dir, "--overwrite"));
  });
  it("an --out that is not empty, without --overwrite", () => {
    const again = lora("scale-out", "--model", model, "--data", textData, "--out", mainRun.dir);
    assert.equal(again.code, 2);
    assert.match(again.err, /is not empty; pass --overwrite/);
  });
  it("mixed row formats in one file", () => {
    assert.throws(
      () => dataFormat([{ text: "a" }, { prompt: "b", completion: "c" }], "mixed.jsonl"),
      /mixed.jsonl: row 2 is prompt-completion but row 1 is text; TRL reads one format per dataset/,
    );
  });
});

describe("lora scale-out --print-settings", () => {
  it("has a row for every setting of the table and every engine flag", () => {
    const r = lora("scale-out", "--print-settings");
    assertOk(r);
    for (const name of [...Object.keys(SETTINGS), "strategy", "num-processes", "mixed-precision", "device"])
      assert.match(r.out, new RegExp(`^--${name} +\\S`, "m"), name);
    assert.match(r.out, /^--rank +LoraConfig\.r /m);
    assert.match(r.out, /^--mask-prompt +SFTConfig\.completion_only_loss \/ assistant_only_loss/m);
  });
});
