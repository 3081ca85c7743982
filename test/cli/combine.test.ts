/**
 * Several adapters from the command line: `--adapter a --adapter c` stacks them (against PEFT's logits
 * with both active, test/fixtures/combine/logits.json), `PATH:W` weights one, `lora merge --method`
 * writes a new adapter, and `lora merge --model` folds several into a model; the three give the same
 * loss. Bad input: one line naming the flag, the adapter and the value.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { noGrad } from "../../src/autograd/tape.js";
import { parseAdapterSpec } from "../../src/cli/adapters.js";
import { parseFlags } from "../../src/cli/command.js";
import { loadModel } from "../../src/cli/load.js";
import { mergeCommand } from "../../src/cli/merge.js";
import { readAdapter } from "../../src/io/node/adapter-folder.js";
import type { CausalLM } from "../../src/models/model.js";
import { assertClose, assertOk, fixtureModel, fixturesDir, lora } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-combine-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const fx = (name: string) => join(fixturesDir, "combine", name);
const llama = fixtureModel("llama_gqa_tied");
const peft = JSON.parse(readFileSync(fx("logits.json"), "utf8"));
const ids = Int32Array.from(peft.ids as number[]);

const quiet = <T>(fn: () => T): T => {
  const err = console.error;
  console.error = () => {};
  try {
    return fn();
  } finally {
    console.error = err;
  }
};
const logitsWith = (specs: Array<{ path: string; weight: number | null }>) =>
  quiet(() => {
    const { model } = loadModel(llama, specs);
    return noGrad(() => (model as CausalLM).forward(ids, [1, ids.length]).data.slice());
  });

describe("--adapter PATH[:WEIGHT]", () => {
  it("a trailing :<number> is a weight; other colons stay in the path; a weight must be finite", () => {
    assert.deepEqual(parseAdapterSpec("runs/a:0.5"), { path: "runs/a", weight: 0.5 });
    assert.deepEqual(parseAdapterSpec("runs/a:-2e-1"), { path: "runs/a", weight: -0.2 });
    assert.deepEqual(parseAdapterSpec("runs/a"), { path: "runs/a", weight: null });
    assert.deepEqual(parseAdapterSpec("x:y/a"), { path: "x:y/a", weight: null });
    assert.deepEqual(parseAdapterSpec("x:1/a:.25"), { path: "x:1/a", weight: 0.25 });
    // a path that exists with its ':<number>' is a path
    const odd = join(tmp, "run:2");
    mkdirSync(odd);
    assert.deepEqual(parseAdapterSpec(odd), { path: odd, weight: null });
    for (const bad of ["a:nan", "a:inf", "a:1e999", "a:-Infinity"])
      assert.throws(() => parseAdapterSpec(bad), /--adapter a:.*: the weight ".*" is not a finite number/);
  });

  it("stacked adapters give PEFT's logits with both active; none gives the base", () => {
    assertClose(
      logitsWith([
        { path: fx("a"), weight: null },
        { path: fx("c"), weight: null },
      ]),
      peft["a+c"],
      "f32",
      "a + c",
    );
    assertClose(logitsWith([]), peft.base, "f32", "base");
  });
});

describe("lora merge with several adapters", () => {
  const data = join(tmp, "ids.jsonl");
  writeFileSync(data, `${JSON.stringify({ input_ids: [...ids] })}\n`);
  const evalLoss = (...adapterArgs: string[]) => {
    const model = adapterArgs[0] === "--model" ? [] : ["--model", llama];
    const r = lora("eval", ...model, ...adapterArgs, "--data", data, "--json", "--base-dtype", "f32");
    assertOk(r);
    return JSON.parse(r.out).loss as number;
  };

  it("--method cat writes a PEFT adapter equal to the weighted stack, and --model folds the same sum into a model", () => {
    const out = join(tmp, "cat");
    const r = lora(
      "merge",
      "--adapter",
      `${fx("a")}:0.7`,
      "--adapter",
      `${fx("c")}:-0.4`,
      "--method",
      "cat",
      "--out",
      out,
    );
    assertOk(r);
    assert.match(r.out, /combined 2 adapter\(s\) .* by cat: r 6, lora_alpha 6, 6 module\(s\)/);
    const written = readAdapter(out);
    assert.equal(written.config.r, 6);
    assert.equal(written.baseModel, "test/fixtures/models/llama_gqa_tied");
    assert.deepEqual(JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")).peft_type, "LORA");
    const stacked = evalLoss("--adapter", `${fx("a")}:0.7`, "--adapter", `${fx("c")}:-0.4`);
    const combined = evalLoss("--adapter", out);
    const merged = join(tmp, "merged");
    assertOk(
      lora(
        "merge",
        "--model",
        llama,
        "--adapter",
        `${fx("a")}:0.7`,
        "--adapter",
        `${fx("c")}:-0.4`,
        "--out",
        merged,
      ),
    );
    assert.ok(existsSync(join(merged, "model.safetensors")));
    const folded = evalLoss("--model", merged);
    assertClose([combined, folded], [stacked, stacked], "f32", "cat adapter, merged model vs stack");
  });

  it("refuses --model with --method, unequal ranks, a bad density, a non-finite weight: one message naming the value", () => {
    const cases: Array<[string[], RegExp]> = [
      [
        ["--model", llama, "--adapter", fx("a"), "--method", "cat", "--out", join(tmp, "x")],
        /--model and --method together: .*drop --model; or drop --method/,
      ],
      [
        ["--adapter", fx("a"), "--adapter", fx("c"), "--method", "linear", "--out", join(tmp, "x")],
        /linear needs equal ranks: .* r 4 in adapter ".*\/a" and r 2 in adapter ".*\/c"/,
      ],
      [
        [
          "--adapter",
          fx("a"),
          "--adapter",
          fx("b"),
          "--method",
          "ties",
          "--density",
          "1.5",
          "--out",
          join(tmp, "x"),
        ],
        /density 1\.5 is outside \(0, 1\]/,
      ],
      [
        ["--adapter", `${fx("a")}:nan`, "--adapter", fx("b"), "--method", "cat", "--out", join(tmp, "x")],
        /the weight "nan" is not a finite number/,
      ],
      [
        ["--adapter", fx("a"), "--adapter", fx("b"), "--density", "0.5", "--out", join(tmp, "x")],
        /--density is an option of --method/,
      ],
      [
        ["--adapter", fx("a"), "--method", "average", "--out", join(tmp, "x")],
        /--method must be one of cat, linear, svd, ties, dare_linear, dare_ties, magnitude_prune, got "average"/,
      ],
    ];
    // in-process (a process each would take seconds), then one run for the exit code and the one line
    for (const [args, want] of cases)
      assert.throws(
        () => quiet(() => mergeCommand.run(parseFlags(mergeCommand, args))),
        want,
        args.join(" "),
      );
    const r = lora("merge", ...cases[1]![0]);
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, cases[1]![1]);
    assert.ok(!existsSync(join(tmp, "x")), "nothing written");
  });
});
