/**
 * PiSSA and OLoRA adapters as PEFT 0.21 saves them, on the llama_untied fixture
 * (scripts/make_init_fixtures.py): loading one recomputes the residual base as PEFT does, PEFT's
 * converted rank-2r adapter gives the same logits on the original base, ours converts the same way,
 * and what we write (both forms) gives back the trained model. Also the refusals.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { readAdapterInput } from "../../src/io/node/adapter-folder.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { adapterFiles, addAdapter, attachAdapter, parseAdapterConfig } from "../../src/io/peft.js";
import { plainLoraAdapterFiles } from "../../src/io/peft-convert.js";
import { parseSafetensors, tensorToFloat32 } from "../../src/io/safetensors.js";
import { AdapterSet } from "../../src/lora/adapter-set.js";
import type { LoraConfig } from "../../src/lora/config.js";
import { applyLoRA, loraLayers } from "../../src/lora/inject.js";
import type { CausalLM } from "../../src/models/model.js";
import { Rng } from "../../src/tensor/random.js";
import { assertClose, fixtureModel, fixturesDir } from "../helpers.js";

const DIR = join(fixturesDir, "init");
const base = () => loadModelFolder(fixtureModel("llama_untied")).model as CausalLM;
const logits = (model: CausalLM, ids: number[]) =>
  model.forward(Int32Array.from(ids), [1, ids.length]).data.slice();
const flat = (rows: number[][]) => Float32Array.from(rows.flat());

/** B·A per module path of a PEFT adapter's tensors (sign-free: a flipped component cancels). */
function products(files: Record<string, Uint8Array | string> | Map<string, Uint8Array>) {
  const bytes = files instanceof Map ? files : new Map(Object.entries(files));
  const t = parseSafetensors(bytes.get("adapter_model.safetensors") as Uint8Array, "adapter").tensors;
  const out = new Map<string, Float64Array>();
  for (const [key, a] of t) {
    const m = /^(.*)\.lora_A\.weight$/.exec(key);
    if (!m) continue;
    const b = t.get(`${m[1]}.lora_B.weight`)!;
    const [r, inF] = a.shape as [number, number];
    const outF = b.shape[0]!;
    const A = tensorToFloat32(a);
    const B = tensorToFloat32(b);
    const p = new Float64Array(outF * inF);
    for (let i = 0; i < outF; i++)
      for (let j = 0; j < inF; j++) {
        let s = 0;
        for (let c = 0; c < r; c++) s += B[i * r + c]! * A[c * inF + j]!;
        p[i * inF + j] = s;
      }
    out.set(m[1]!, p);
  }
  return out;
}

const readFolder = (dir: string) =>
  new Map([["adapter_model.safetensors", readFileSync(join(dir, "adapter_model.safetensors"))]]);

for (const kind of ["pissa", "olora"] as const) {
  describe(`${kind} adapters in PEFT's format`, () => {
    const folder = join(DIR, `llama-${kind}`);
    const expected = JSON.parse(readFileSync(join(folder, "expected.json"), "utf8"));
    const ids = expected.input_ids as number[];

    it(`PEFT's ${kind} adapter loads on the original base: the residual is recomputed, logits as PEFT's`, () => {
      const model = base();
      const adapter = readAdapterInput(join(folder, "adapter"));
      assert.equal(adapter.config.init_lora_weights, kind);
      attachAdapter(model, adapter.config, adapter.tensors, adapter.source);
      assertClose(logits(model, ids), flat(expected.reloaded_logits), "f32", "logits");
    });

    it(`PEFT's converted rank-2r adapter gives the same logits on the original base`, () => {
      const model = base();
      const adapter = readAdapterInput(join(folder, "converted"));
      assert.equal(adapter.config.init_lora_weights, true);
      attachAdapter(model, adapter.config, adapter.tensors, adapter.source);
      assertClose(logits(model, ids), flat(expected.converted_logits), "f32", "logits");
      assertClose(flat(expected.converted_logits), flat(expected.trained_logits), "f32", "PEFT itself");
    });

    it("our conversion of PEFT's adapter is PEFT's (B'·A' = B·A - B0·A0 per module)", () => {
      const model = base();
      const adapter = readAdapterInput(join(folder, "adapter"));
      attachAdapter(model, adapter.config, adapter.tensors, adapter.source);
      const ours = plainLoraAdapterFiles(model, adapter.config, "llama_untied");
      const config = JSON.parse(ours["adapter_config.json"] as string);
      const peftConfig = JSON.parse(readFileSync(join(folder, "converted/adapter_config.json"), "utf8"));
      for (const k of ["r", "lora_alpha", "init_lora_weights", "target_modules"])
        assert.deepEqual(config[k], peftConfig[k], k);
      const want = products(readFolder(join(folder, "converted")));
      const got = products(ours);
      assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
      for (const [path, p] of got) assertClose(p, want.get(path)!, "f32", path);
    });

    it("trained here: the converted adapter on the original base equals the trained model on its residual", () => {
      const config: LoraConfig = {
        r: 2,
        lora_alpha: 4,
        lora_dropout: 0,
        target_modules: ["q_proj", "v_proj"],
        use_rslora: false,
        init_lora_weights: kind,
      };
      const model = base();
      applyLoRA(model, config);
      const before = logits(model, ids);
      assertClose(before, logits(base(), ids), "f32", "a fresh PiSSA/OLoRA layer computes W0");
      const rng = new Rng(9); // a stand-in for training: move A and B off their initial values
      for (const [, l] of loraLayers(model)) {
        l.lora_A.assign(l.lora_A.data.map((x) => x + 0.05 * rng.normal()));
        l.lora_B.assign(l.lora_B.data.map((x) => x + 0.05 * rng.normal()));
      }
      const trained = logits(model, ids);
      assert.ok(Math.max(...trained.map((x, i) => Math.abs(x - before[i]!))) > 1e-3, "training changed it");

      const load = (files: Record<string, Uint8Array | string>) => {
        const fresh = base();
        const cfg = parseAdapterConfig(JSON.parse(files["adapter_config.json"] as string), "cfg", []);
        const t = parseSafetensors(files["adapter_model.safetensors"] as Uint8Array, "adapter").tensors;
        attachAdapter(fresh, cfg, t, "adapter");
        return { logits: logits(fresh, ids), cfg };
      };
      const converted = load(plainLoraAdapterFiles(model, config, "llama_untied"));
      assert.equal(converted.cfg.r, 4);
      assertClose(converted.logits, trained, "f32", "converted, on the original base");
      // PEFT's form: loading recomputes the same residual, bit for bit
      assert.deepEqual(load(adapterFiles(model, config, "llama_untied")).logits, trained);
    });

    it("an adapter set refuses it, naming the adapter and saying how to convert it", () => {
      const set = new AdapterSet(base());
      const adapter = readAdapterInput(join(folder, "adapter"));
      assert.throws(
        () => addAdapter(set, "mine", adapter),
        (e: Error) =>
          /"mine"/.test(e.message) && e.message.includes(kind) && /--convert-to-lora/.test(e.message),
      );
    });
  });
}

describe("a converted adapter of rank 2r > min(in, out)", () => {
  it("loads, as PEFT loads it (q_proj and v_proj are [24, 32]: r = 16 converts to 32)", () => {
    const config: LoraConfig = {
      r: 16,
      lora_alpha: 16,
      lora_dropout: 0,
      target_modules: ["q_proj", "v_proj"],
      use_rslora: false,
      init_lora_weights: "pissa",
    };
    const model = base();
    applyLoRA(model, config);
    const rng = new Rng(2);
    for (const [, l] of loraLayers(model)) l.lora_B.assign(l.lora_B.data.map((x) => x + 0.05 * rng.normal()));
    const ids = [3, 1, 4, 1, 5, 9, 2, 6];
    const files = plainLoraAdapterFiles(model, config, "llama_untied");
    const fresh = base();
    const cfg = parseAdapterConfig(JSON.parse(files["adapter_config.json"] as string), "cfg", []);
    assert.equal(cfg.r, 32);
    const t = parseSafetensors(files["adapter_model.safetensors"] as Uint8Array, "adapter").tensors;
    attachAdapter(fresh, cfg, t, "adapter");
    assertClose(logits(fresh, ids), logits(model, ids), "f32", "logits");
  });
});

describe("init_lora_weights refused at load", () => {
  it("loftq (no 4-bit here) and an unknown value name the file and the value", () => {
    const config = JSON.parse(readFileSync(join(DIR, "llama-pissa/adapter/adapter_config.json"), "utf8"));
    for (const [value, re] of [
      ["loftq", /loftq.*4-bit/],
      ["pissa_niter_four", /"pissa_niter_four"/],
    ] as const)
      assert.throws(
        () => parseAdapterConfig({ ...config, init_lora_weights: value }, "x/adapter_config.json", []),
        (e: Error) => e.message.includes("x/adapter_config.json") && re.test(e.message),
      );
  });
});
