/**
 * The newer families (#13) through every command: train (f32 and bf16 base), merge, eval, params, and
 * KV-cached generation, on the fixtures made by the real transformers + PEFT.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { noGrad } from "../../src/autograd/index.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { KVCache } from "../../src/nn/kv-cache.js";
import { assertClose, assertOk, fixtureModel, lora, writeJsonl } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-families-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const model = fixtureModel;
const ok = assertOk;

const data = join(tmp, "data");
mkdirSync(data);
const rows = (n: number, off: number) =>
  Array.from({ length: n }, (_, i) => ({
    input_ids: Array.from({ length: 20 }, (_, t) => (7 * (i + off) + 3 * t) % 70),
  }));
writeJsonl(join(data, "train.jsonl"), rows(16, 0));
writeJsonl(join(data, "valid.jsonl"), rows(4, 50));

const FAMILIES: [string, string[]][] = [
  ["llama3_rope", []],
  ["qwen3", []],
  ["smollm3", ["--targets", "q_proj,v_proj"]],
  ["gemma3_text", []],
  ["gemma3_softcap", []],
  ["mistral_window", []],
  ["phi3", ["--targets", "qkv_proj,o_proj"]],
];

describe("newer families through the CLI", () => {
  for (const [name, targets] of FAMILIES) {
    it(`${name}: trains (f32 and bf16 base), merges to base + adapter, counts parameters`, () => {
      const run = join(tmp, `${name}-run`);
      ok(
        lora(
          "train",
          "--model",
          model(name),
          "--data",
          data,
          "--out",
          run,
          "--steps",
          "3",
          "--lr",
          "1e-2",
          "--base-dtype",
          "f32",
          ...targets,
        ),
      );
      ok(
        lora(
          "train",
          "--model",
          model(name),
          "--data",
          data,
          "--out",
          join(tmp, `${name}-bf16`),
          "--steps",
          "2",
          "--base-dtype",
          "bf16",
          ...targets,
        ),
      );
      const merged = join(tmp, `${name}-merged`);
      ok(lora("merge", "--model", model(name), "--adapter", run, "--out", merged));
      const loss = (...args: string[]) => {
        const r = lora("eval", ...args, "--data", data, "--json", "--base-dtype", "f32", "--seq-len", "20");
        ok(r);
        return JSON.parse(r.out).loss as number;
      };
      const a = loss("--model", merged);
      const b = loss("--model", model(name), "--adapter", run);
      assert.ok(Math.abs(a - b) <= 1e-4 * b, `${a} vs ${b}`);
      ok(lora("params", "--model", model(name), ...targets));
    });
  }

  it("smollm3 and phi3 need --targets, as PEFT has no default for them", () => {
    for (const name of ["smollm3", "phi3"]) {
      const r = lora(
        "train",
        "--model",
        model(name),
        "--data",
        data,
        "--out",
        join(tmp, `no-targets-${name}`),
      );
      assert.equal(r.code, 2);
      assert.match(
        r.err,
        new RegExp(`PEFT has no default target_modules for model_type "${name}"; pass --targets`),
      );
    }
  });
});

describe("newer families: KV-cached decoding equals the full forward, step by step", () => {
  // phi3 stays within original_max_position_embeddings (16): past it LongRoPE switches to its long
  // factors, and keys cached before keep the short ones, as in transformers
  for (const [name, n] of [
    ["llama3_rope", 12],
    ["qwen3", 12],
    ["smollm3", 12],
    ["gemma3_text", 12],
    ["gemma3_softcap", 12],
    ["mistral_window", 12],
    ["phi3", 10],
  ] as const) {
    it(name, () => {
      const { model: m } = loadModelFolder(model(name));
      const V = m.vocabSize;
      const ids = [3, 14, 15, 9, 26];
      const cache = new KVCache();
      // each cached step's logits equal the full forward's last row, at f32 tolerance
      let logits = noGrad(() => m.forward(Int32Array.from(ids), [1, ids.length], cache)).data;
      for (let i = 0; i < n; i++) {
        const row = logits.subarray(logits.length - V);
        let best = 0;
        for (let v = 1; v < V; v++) if (row[v]! > row[best]!) best = v;
        ids.push(best);
        const full = noGrad(() => m.forward(Int32Array.from(ids), [1, ids.length])).data;
        logits = noGrad(() => m.forward(Int32Array.from([best]), [1, 1], cache)).data;
        assertClose(logits, full.subarray(full.length - V), "f32", `${name} step ${i + 1}`);
      }
    });
  }
});
