/**
 * Issue #20 as a user meets it: `lora train` never destroys files it did not write, writes only where
 * the run lives, and never answers wrong with exit 0. Files that must survive are checked by hash.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
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
import {
  assertOk,
  fixtureModel,
  fixturesDir,
  lora,
  loraIn,
  SHARED_MISSING,
  sharedData,
  writeJsonl,
} from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-safety-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const model = fixtureModel;
const jsonl = writeJsonl;

/** sha256 of every file under `dir`, by relative path: what must survive, byte for byte. */
function hashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p, `${rel}${e.name}/`);
      else out[`${rel}${e.name}`] = createHash("sha256").update(readFileSync(p)).digest("hex");
    }
  };
  walk(dir, "");
  return out;
}

const data = join(tmp, "pattern");
mkdirSync(data);
const row = (i: number) => ({
  input_ids: Array.from({ length: 16 + (i % 5) }, (_, t) => (5 * i + 3 * t) % 60),
});
jsonl(
  join(data, "train.jsonl"),
  Array.from({ length: 32 }, (_, i) => row(i)),
);
jsonl(
  join(data, "valid.jsonl"),
  Array.from({ length: 40 }, (_, i) => row(100 + i)),
);
const tiny = model("llama_gqa_tied");
const trainTiny = (out: string, ...args: string[]) =>
  lora("train", "--model", tiny, "--data", data, "--out", out, ...args);
const ok = assertOk;

describe("lora train never destroys a user's files (#20.1)", () => {
  it("refuses --out = the model folder, with or without --overwrite, and deletes nothing", () => {
    const victim = join(tmp, "victim");
    cpSync(tiny, victim, { recursive: true });
    const before = hashes(victim);
    for (const extra of [[], ["--overwrite"]]) {
      const r = lora("train", "--model", victim, "--data", data, "--out", victim, "--steps", "1", ...extra);
      assert.equal(r.code, 2);
      assert.match(r.err, /--out .*victim is the model folder; lora train never writes where it reads/);
      assert.doesNotMatch(r.err, /pass --overwrite/);
    }
    assert.deepEqual(hashes(victim), before);
  });

  it("refuses an --out holding a model it did not write (a merged folder), even with --overwrite", () => {
    const merged = join(tmp, "merged");
    ok(lora("merge", "--model", tiny, "--adapter", join(tiny, "adapter"), "--out", merged));
    const before = hashes(merged);
    for (const extra of [[], ["--overwrite"]]) {
      const r = trainTiny(merged, "--steps", "1", ...extra);
      assert.equal(r.code, 2);
      assert.match(r.err, /holds files that lora train did not write \(config\.json, model\.safetensors/);
      assert.doesNotMatch(r.err, /already holds a training run/);
    }
    assert.deepEqual(hashes(merged), before);
  });

  it("refuses an --out that holds the data or the adapter it reads", () => {
    const r = lora(
      "train",
      "--model",
      tiny,
      "--data",
      join(data, "train.jsonl"),
      "--out",
      data,
      "--steps",
      "1",
    );
    assert.equal(r.code, 2);
    assert.match(r.err, /--out .* holds the --data path/);
    const adapter = join(tmp, "adapters/mine");
    cpSync(join(tiny, "adapter"), adapter, { recursive: true });
    const a = lora(
      "train",
      "--model",
      tiny,
      "--adapter",
      adapter,
      "--data",
      data,
      "--out",
      join(tmp, "adapters"),
    );
    assert.equal(a.code, 2);
    assert.match(a.err, /--out .*adapters holds the --adapter path/);
  });

  it("--overwrite with bad data leaves the previous run whole", () => {
    const out = join(tmp, "kept");
    ok(trainTiny(out, "--steps", "2"));
    const before = hashes(out);
    const bad = join(tmp, "bad.jsonl");
    writeFileSync(bad, '{"input_ids": [1, 2\n');
    const r = lora("train", "--model", tiny, "--data", bad, "--out", out, "--overwrite", "--steps", "1");
    assert.equal(r.code, 1);
    assert.deepEqual(hashes(out), before);
  });

  it("--overwrite keeps the previous run until the new one has a checkpoint", () => {
    const out = join(tmp, "diverging");
    ok(trainTiny(out, "--steps", "2"));
    const before = hashes(out);
    // an adapter with a NaN: the new run fails at its first step, before any checkpoint
    const poisoned = join(tmp, "poisoned");
    cpSync(join(tiny, "adapter"), poisoned, { recursive: true });
    const file = readSafetensorsFile(join(poisoned, "adapter_model.safetensors"));
    const tensors = [...file.tensors].map(([name, t]) => {
      const d = tensorToFloat32(t).slice();
      if (name.endsWith("layers.1.self_attn.v_proj.lora_B.weight")) d.fill(3e38); // finite, but the loss overflows
      return { name, dtype: "F32" as const, shape: t.shape, data: d };
    });
    writeFileSync(
      join(poisoned, "adapter_model.safetensors"),
      serializeSafetensors(tensors, { format: "pt" }),
    );
    const r = trainTiny(out, "--adapter", poisoned, "--steps", "2", "--overwrite");
    assert.equal(r.code, 1);
    assert.match(r.err, /at step 1; .*The previous run in .*diverging is unchanged/);
    assert.deepEqual(hashes(out), before);
    assert.deepEqual(
      readdirSync(tmp).filter((n) => n.startsWith(".diverging.")),
      [],
      "no staging folder is left behind",
    );
  });

  it("--overwrite replaces only what lora train wrote: a user's own file in --out stays", () => {
    const out = join(tmp, "mixed");
    ok(trainTiny(out, "--steps", "3", "--save-every", "1", "--keep", "0"));
    writeFileSync(join(out, "NOTES.md"), "my notes\n");
    const r = trainTiny(out, "--steps", "1", "--overwrite", "--seed", "4");
    ok(r);
    assert.equal(readFileSync(join(out, "NOTES.md"), "utf8"), "my notes\n");
    assert.deepEqual(readdirSync(join(out, "checkpoints")), ["step-1"]);
    assert.ok(existsSync(join(out, "adapter_model.safetensors")));
  });
});

describe("lora merge never writes into what it reads", () => {
  it("refuses --out = the adapter folder, and leaves it as it was", () => {
    const run = join(tmp, "merge-into-adapter");
    ok(trainTiny(run, "--steps", "1"));
    const before = hashes(run);
    const r = lora("merge", "--model", tiny, "--adapter", run, "--out", run);
    assert.equal(r.code, 2);
    assert.match(
      r.err,
      /--out .*merge-into-adapter is the adapter folder; lora merge never writes where it reads/,
    );
    assert.deepEqual(hashes(run), before);
  });
});

describe("--resume writes only into the run folder that holds the checkpoint (#20.2)", () => {
  it("resuming a run from another directory leaves that directory's run alone", () => {
    const a = join(tmp, "r/a");
    const b = join(tmp, "r/b");
    mkdirSync(a, { recursive: true });
    mkdirSync(b, { recursive: true });
    // relative paths, from a/
    cpSync(tiny, join(a, "model"), { recursive: true });
    cpSync(data, join(a, "data"), { recursive: true });
    ok(
      loraIn(
        { cwd: a },
        "train",
        "--model",
        "model",
        "--data",
        "data",
        "--out",
        "run",
        "--steps",
        "4",
        "--save-every",
        "2",
      ),
    );
    ok(
      loraIn(
        { cwd: b },
        "train",
        "--model",
        tiny,
        "--data",
        data,
        "--out",
        "run",
        "--steps",
        "2",
        "--keep",
        "0",
      ),
    );
    const other = hashes(join(b, "run"));
    // kill the first run's end: resume it from step 2 while standing in b/
    rmSync(join(a, "run/checkpoints/step-4"), { recursive: true });
    const state = join(a, "run/checkpoints/step-2/trainer_state.json");
    const json = JSON.parse(readFileSync(state, "utf8"));
    json.run.settings.out = join(tmp, "elsewhere"); // an edited "out" chooses nothing
    writeFileSync(state, JSON.stringify(json));
    const r = loraIn({ cwd: b }, "train", "--resume", join(a, "run"));
    ok(r);
    assert.match(r.out, /resuming from step 2 of 4/);
    assert.deepEqual(hashes(join(b, "run")), other);
    assert.ok(existsSync(join(a, "run/checkpoints/step-4")));
    assert.ok(!existsSync(join(tmp, "elsewhere")));
  });

  it("a checkpoint copied into someone's folder does not make it a run: nothing there is replaced", () => {
    const src = join(tmp, "ck-src");
    ok(trainTiny(src, "--steps", "2", "--save-every", "1"));
    const mine = join(tmp, "mine");
    cpSync(join(tiny, "adapter"), mine, { recursive: true });
    cpSync(join(src, "checkpoints/step-1"), join(mine, "ck"), { recursive: true });
    const before = hashes(mine);
    const r = lora("train", "--resume", join(mine, "ck"));
    assert.equal(r.code, 2);
    assert.match(r.err, /is not a run folder of lora train \(it holds adapter_config\.json/);
    assert.deepEqual(hashes(mine), before);
  });

  it("refuses a --model whose weights differ from the run's, though its config.json is the same", () => {
    const out = join(tmp, "weights");
    ok(trainTiny(out, "--steps", "2", "--save-every", "1"));
    const other = join(tmp, "other-weights");
    cpSync(tiny, other, { recursive: true });
    const file = join(other, "model.safetensors");
    const bytes = readFileSync(file);
    bytes[bytes.length - 1]! ^= 1;
    writeFileSync(file, bytes);
    const r = lora("train", "--resume", out, "--model", other);
    assert.equal(r.code, 2);
    assert.match(r.err, /the model's weights differ from the ones the run was trained on/);
  });

  it("refuses an --out other than the checkpoint's run folder", () => {
    const out = join(tmp, "own");
    ok(trainTiny(out, "--steps", "2", "--save-every", "1"));
    const r = lora("train", "--resume", join(out, "checkpoints/step-1"), "--out", join(tmp, "other"));
    assert.equal(r.code, 2);
    assert.match(r.err, /continues its run in .*own, not in --out/);
  });
});

describe("non-finite numbers are never an answer (#20.3)", () => {
  it("--resume may lower the learning rate and extend the run; the change is recorded", () => {
    const out = join(tmp, "tuned");
    ok(trainTiny(out, "--steps", "2", "--lr", "1e-2"));
    const r = lora("train", "--resume", out, "--lr", "5e-3", "--steps", "4");
    ok(r);
    assert.match(r.out, /resuming from step 2 of 4 .*changed: --lr 0\.01 -> 0\.005, --steps 2 -> 4/);
    const state = JSON.parse(readFileSync(join(out, "checkpoints/step-4/trainer_state.json"), "utf8"));
    assert.deepEqual(state.run.resumes, [{ step: 2, changed: { lr: [0.01, 0.005], steps: [2, 4] } }]);
    assert.equal(state.run.settings.lr, 0.005);
  });

  it("lora eval exits non-zero when the loss is not finite", () => {
    const poisoned = join(tmp, "eval-poison");
    cpSync(join(tiny, "adapter"), poisoned, { recursive: true });
    const file = readSafetensorsFile(join(poisoned, "adapter_model.safetensors"));
    const tensors = [...file.tensors].map(([name, t]) => {
      const d = tensorToFloat32(t).slice();
      if (name.endsWith("lora_B.weight")) d.fill(3e38); // finite on disk, non-finite logits
      return { name, dtype: "F32" as const, shape: t.shape, data: d };
    });
    writeFileSync(
      join(poisoned, "adapter_model.safetensors"),
      serializeSafetensors(tensors, { format: "pt" }),
    );
    const r = lora("eval", "--model", tiny, "--adapter", poisoned, "--data", data, "--json");
    assert.equal(r.code, 1);
    assert.match(r.err, /the loss is (NaN|Infinity): the model or the adapter gives non-finite logits/);
    assert.equal(r.out, "");
  });
});

describe("ids, targets and context are checked when read (#20.4, #20.8)", () => {
  it("names the row whose id lies outside the vocabulary", () => {
    const f = join(tmp, "big-ids.jsonl");
    jsonl(f, [{ input_ids: [1, 2, 3] }, { input_ids: [4, 70, 71] }]);
    const r = lora("train", "--model", tiny, "--data", f, "--out", join(tmp, "ids"));
    assert.equal(r.code, 2);
    assert.match(r.err, /big-ids\.jsonl: row 2 has token id 71, outside the model's vocabulary of 71/);
    assert.ok(!existsSync(join(tmp, "ids")), "nothing is written for a run that cannot start");
  });

  it("refuses --seq-len past a learned-position model's context, warns past RoPE's", () => {
    const g = lora(
      "train",
      "--model",
      model("gpt2"),
      "--data",
      data,
      "--out",
      join(tmp, "ctx"),
      "--seq-len",
      "64",
    );
    assert.equal(g.code, 2);
    assert.match(g.err, /--seq-len 64 is longer than the model's context of 32 positions/);
    const l = trainTiny(join(tmp, "ctx-llama"), "--seq-len", "128", "--steps", "1");
    ok(l);
    assert.match(l.err, /warning: --seq-len 128 is longer than the model's context of 64 tokens/);
  });
});

describe("configs that would exhaust the machine (#20.6)", () => {
  it("lora params refuses a million layers from the weight headers, at once", () => {
    const big = join(tmp, "million");
    cpSync(tiny, big, { recursive: true });
    const config = JSON.parse(readFileSync(join(big, "config.json"), "utf8"));
    writeFileSync(join(big, "config.json"), JSON.stringify({ ...config, num_hidden_layers: 1_000_000 }));
    const t0 = Date.now();
    const r = lora("params", "--model", big);
    assert.equal(r.code, 1);
    assert.match(r.err, /the weights do not fit config\.json/);
    assert.ok(Date.now() - t0 < 10_000, "answers in seconds");
  });
});

describe("merging a head tied to the embedding unties it (#20.5)", () => {
  for (const name of ["llama_gqa_tied", "gpt2"]) {
    it(`${name}: the merged model scores as base + adapter, with its own lm_head`, () => {
      const run = join(tmp, `head-${name}`);
      ok(
        lora(
          "train",
          "--model",
          model(name),
          "--data",
          data,
          "--out",
          run,
          "--targets",
          "lm_head,c_attn,q_proj"
            .split(",")
            .filter((t) => (name === "gpt2" ? t !== "q_proj" : t !== "c_attn"))
            .join(","),
          "--steps",
          "3",
          "--lr",
          "1e-2",
          "--base-dtype",
          "f32",
        ),
      );
      const out = join(tmp, `head-${name}-merged`);
      const m = lora("merge", "--model", model(name), "--adapter", run, "--out", out);
      ok(m);
      assert.match(m.out, /lm_head shared the embedding's weight .*tie_word_embeddings: false/);
      assert.equal(JSON.parse(readFileSync(join(out, "config.json"), "utf8")).tie_word_embeddings, false);
      assert.ok(readSafetensorsFile(join(out, "model.safetensors")).tensors.has("lm_head.weight"));
      const loss = (...args: string[]) => {
        const r = lora("eval", ...args, "--data", data, "--json", "--base-dtype", "f32");
        ok(r);
        return JSON.parse(r.out).loss as number;
      };
      const merged = loss("--model", out);
      const unmerged = loss("--model", model(name), "--adapter", run);
      assert.ok(Math.abs(merged - unmerged) <= 1e-4 * unmerged, `${merged} vs ${unmerged}`);
      assert.match(m.out, /with the base model .*, which is unchanged/);
    });
  }
});

describe("the newcomer's first hour (#20.9, #20.10)", () => {
  it("caps validation at --val-batches × --batch-size rows and says so", () => {
    const r = trainTiny(join(tmp, "val-cap"), "--steps", "1", "--val-batches", "2", "--batch-size", "4");
    ok(r);
    assert.match(r.out, /8 of 40 validation rows \(--val-batches 2 × --batch-size 4; 0 for all\)/);
  });

  it("lora eval shows progress and uses the run's --seq-len for its adapter", () => {
    const run = join(tmp, "seq8");
    ok(trainTiny(run, "--steps", "1", "--seq-len", "8"));
    const r = lora("eval", "--model", tiny, "--adapter", run, "--data", data, "--json");
    ok(r);
    assert.match(r.err, /seq-len 8, as the adapter's training run used/);
    assert.match(r.err, /evaluating: \d+\/40 rows/);
    const explicit = lora(
      "eval",
      "--model",
      tiny,
      "--adapter",
      run,
      "--data",
      data,
      "--json",
      "--seq-len",
      "8",
    );
    assert.equal(JSON.parse(r.out).loss, JSON.parse(explicit.out).loss);
  });

  it("flags: our own messages for negative numbers, empty targets, zero epochs, absurd alpha, eval-every", () => {
    const cases: [string[], RegExp][] = [
      [["--alpha", "1e308"], /the LoRA scale lora_alpha 1e\+308 \/ r 8 = 1\.25e\+307 is above 1000000/],
      [["--steps", "-1"], /--steps must be an integer >= 1, got "-1"/],
      [["--targets", ""], /--targets is empty/],
      [["--epochs", "0"], /--epochs must be a number > 0, got "0"/],
    ];
    for (const [args, msg] of cases) {
      const r = trainTiny(join(tmp, "flags"), ...args);
      assert.equal(r.code, 2, args.join(" "));
      assert.match(r.err, msg);
    }
    const noVal = lora(
      "train",
      "--model",
      tiny,
      "--data",
      join(data, "train.jsonl"),
      "--out",
      join(tmp, "nv"),
      "--eval-every",
      "2",
    );
    assert.equal(noVal.code, 2);
    assert.match(noVal.err, /--eval-every 2 needs validation data: pass --val-data/);
    assert.ok(!existsSync(join(tmp, "flags")) && !existsSync(join(tmp, "nv")));
  });

  it("--resume --steps extends a finished run; lora --help lists doctor", () => {
    const out = join(tmp, "extend");
    ok(trainTiny(out, "--steps", "2"));
    const r = lora("train", "--resume", out, "--steps", "3");
    ok(r);
    assert.ok(existsSync(join(out, "checkpoints/step-3")));
    assert.match(lora("--help").out, /\n {2}doctor +Say which kernels run here/);
  });

  it("generate stops at the context and refuses --top-p 0", {
    skip: !sharedData("stories260K-hf") && SHARED_MISSING,
  }, () => {
    const m = sharedData("stories260K-hf")!;
    const p = lora("generate", "--model", m, "--prompt", "Once", "--top-p", "0", "--temperature", "1");
    assert.equal(p.code, 2);
    assert.match(p.err, /--top-p must be a number > 0 and <= 1/);
    const ctx = JSON.parse(readFileSync(join(m, "config.json"), "utf8")).max_position_embeddings as number;
    const g = lora(
      "generate",
      "--model",
      m,
      "--prompt",
      "Once",
      "--max-tokens",
      String(ctx + 10),
      "--no-stop",
    );
    ok(g);
    assert.match(g.err, new RegExp(`would pass the model's context of ${ctx} tokens; generating at most`));
  });

  it("quick start on a single text file holds out its last tenth", {
    skip: !sharedData("stories260K-hf") && SHARED_MISSING,
  }, async () => {
    const { spawnSync } = await import("node:child_process");
    const txt = join(tmp, "stories.txt");
    writeFileSync(
      txt,
      Array.from({ length: 30 }, (_, i) => `Tom had a red ball number ${i}. He liked it.`).join("\n\n"),
    );
    const r = spawnSync(
      process.execPath,
      [
        join(fixturesDir, "../../dist/examples/quickstart.js"),
        "--model",
        sharedData("stories260K-hf")!,
        "--data",
        txt,
        "--steps",
        "2",
        "--out",
        join(tmp, "qs"),
      ],
      { encoding: "utf8" },
    );
    assert.match(r.stdout, /has no valid\/test split: holding out its last 3 rows/);
    assert.match(r.stdout, /merged model = base \+ adapter/);
  });
});

describe("tokenizeRows", () => {
  it("cuts a long prompt/completion row at its prompt's start, after BOS, keeping the completion whole", async () => {
    const { tokenizeRows } = await import("../../src/cli/load.js");
    // a stand-in tokenizer: one id per character, BOS 1 unless addSpecialTokens is false, EOS 2
    const tok = {
      bosId: 1,
      eosIds: [2],
      encode: (s: string, o?: { addSpecialTokens?: boolean }) => [
        ...(o?.addSpecialTokens === false ? [] : [1]),
        ...[...s].map((c) => c.charCodeAt(0)),
      ],
    } as unknown as Parameters<typeof tokenizeRows>[1];
    const { rows, truncated, promptCut } = tokenizeRows([{ prompt: "abcdefgh", completion: "XY" }], tok, {
      maskPrompt: true,
      maxLen: 6,
      source: "t",
    });
    assert.equal(promptCut, 1);
    assert.equal(truncated, 0);
    assert.deepEqual(rows[0]!.ids, [1, ..."gh".split("").map((c) => c.charCodeAt(0)), 88, 89, 2]);
    assert.deepEqual(rows[0]!.mask, [0, 0, 0, 1, 1, 1]);
  });

  it("names the row a chat template cannot render", async () => {
    const { tokenizeRows } = await import("../../src/cli/load.js");
    const tok = {
      bosToken: null,
      eosIds: [2],
      encode: () => [5, 6],
      applyChatTemplate: (m: { role: string }[]) => {
        if (m.some((x) => x.role === "tool")) throw new Error("Conversation roles must alternate");
        return "ok";
      },
    } as unknown as Parameters<typeof tokenizeRows>[1];
    const good = { messages: [{ role: "user", content: "a" }] };
    const bad = { messages: [{ role: "tool", content: "b" }] };
    assert.throws(
      () => tokenizeRows([good, bad], tok, { maskPrompt: false, maxLen: 8, source: "chat.jsonl" }),
      /chat\.jsonl: row 2: Conversation roles must alternate/,
    );
  });
});
