/**
 * mlx-lm adapters: the reference folders (scripts/make_mlx_fixtures.py, written as mlx-lm's save code
 * writes them) give the loss PyTorch computes with y + scale·x@lora_a@lora_b; PEFT -> mlx -> PEFT keeps
 * every tensor exactly and the loss to f32 tolerance; what mlx-lm cannot express is converted exactly or
 * refused, naming the problem.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { noGrad } from "../../src/autograd/index.js";
import { loadAdapter, readAdapterConfig, saveAdapter } from "../../src/io/node/adapter-folder.js";
import { saveMlxAdapter } from "../../src/io/node/mlx-folder.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { readSafetensorsFile } from "../../src/io/node/safetensors-file.js";
import { adapterTensors } from "../../src/io/peft.js";
import { serializeSafetensors } from "../../src/io/safetensors.js";
import { applyLoRA, loraLayers } from "../../src/lora/index.js";
import { type CausalLM, modelFamily } from "../../src/models/index.js";
import { Rng } from "../../src/tensor/random.js";
import { languageModelLoss, nextTokenTargets } from "../../src/train/loss.js";
import { assertClose, fixtureModel, fixturesDir, SHARED_MISSING, sharedData } from "../helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-mlx-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(tmp, `d${n++}`);

function lossOf(model: CausalLM, ids2d: number[][]): number {
  const B = ids2d.length;
  const T = ids2d[0]!.length;
  const ids = Int32Array.from(ids2d.flat());
  return noGrad(() => languageModelLoss(model, ids, [B, T], nextTokenTargets(ids, B, T))).item();
}

const expectedOf = (name: string) =>
  JSON.parse(readFileSync(join(fixturesDir, "models", name, "expected.json"), "utf8")) as {
    input_ids: number[][];
    loss_adapter: number;
  };

const tensorsOf = (model: CausalLM) =>
  adapterTensors(model).map((t) => [t.name, Array.from(t.data as Float32Array)] as const);

describe("mlx-lm reference adapters", () => {
  for (const name of ["llama_untied", "gpt2"]) {
    it(`${name}: adapters.safetensors and the numbered checkpoint give PyTorch's loss`, () => {
      const dir = join(fixturesDir, "mlx", name);
      const want = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8"));
      const load = (path: string) => {
        const { model, config } = loadModelFolder(fixtureModel(name));
        const r = loadAdapter(model, path, modelFamily(config).defaultTargets);
        return { model, ...r };
      };
      const latest = load(dir);
      assert.equal(latest.format, "mlx");
      assert.match(
        latest.description,
        /^mlx-lm folder .*\(adapters\.safetensors, rank \d, scale \d+; 1 numbered/,
      );
      assertClose([lossOf(latest.model, want.input_ids)], [want.loss], "f32", `${name} loss`);
      assert.ok(Math.abs(want.loss - want.loss_base) > 1e-3, "the adapter changes the loss");
      const ckpt = load(join(dir, "0000100_adapters.safetensors"));
      assert.match(ckpt.description, /\(0000100_adapters\.safetensors, /);
      assertClose([lossOf(ckpt.model, want.input_ids)], [want.loss_checkpoint], "f32", `${name} checkpoint`);
      // PEFT's view: GPT-2's model.h.{i} is transformer.h.{i}; the last num_layers blocks only
      const paths = latest.paths.sort();
      if (name === "gpt2") assert.equal(paths[0], "transformer.h.0.attn.c_attn");
      else
        assert.deepEqual(paths, [
          "model.layers.1.mlp.down_proj",
          "model.layers.1.self_attn.q_proj",
          "model.layers.1.self_attn.v_proj",
        ]);
    });
  }
});

describe("PEFT -> mlx-lm -> PEFT", () => {
  for (const name of ["llama_untied", "gpt2", "llama_gqa_tied"]) {
    it(`${name}: every tensor exactly, the loss to f32 tolerance`, () => {
      const expected = expectedOf(name);
      const src = join(fixtureModel(name), "adapter");
      const { model, config } = loadModelFolder(fixtureModel(name));
      const defaults = modelFamily(config).defaultTargets;
      loadAdapter(model, src, defaults);
      const mlxDir = fresh();
      assert.deepEqual(saveMlxAdapter(model, mlxDir, { baseModel: name, dropout: 0 }), []);
      const cfg = JSON.parse(readFileSync(join(mlxDir, "adapter_config.json"), "utf8"));
      const peftCfg = readAdapterConfig(src, defaults);
      assert.equal(cfg.fine_tune_type, "lora");
      assert.equal(cfg.num_layers, 2);
      assert.equal(cfg.lora_parameters.rank, peftCfg.r);
      const r = peftCfg.r;
      assert.equal(cfg.lora_parameters.scale, peftCfg.lora_alpha / (peftCfg.use_rslora ? Math.sqrt(r) : r));
      assert.ok(
        cfg.lora_parameters.keys.every((k: string) => !/\d/.test(k)),
        "keys are paths inside a block",
      );
      const st = readSafetensorsFile(join(mlxDir, "adapters.safetensors"));
      assert.deepEqual(st.metadata, { format: "mlx" });
      const first = [...st.tensors.keys()][0]!;
      assert.match(first, name === "gpt2" ? /^model\.h\.0\.attn\.c_attn\.lora_a$/ : /^model\.layers\.0\./);

      const { model: back } = loadModelFolder(fixtureModel(name));
      const read = loadAdapter(back, mlxDir, defaults);
      assert.equal(read.format, "mlx");
      assert.deepEqual(tensorsOf(back), tensorsOf(model));
      assertClose([lossOf(back, expected.input_ids)], [expected.loss_adapter], "f32", `${name} loss`);
      // and written as PEFT again: the same tensors
      const peftDir = fresh();
      saveAdapter(back, peftDir, read.config, name);
      const { model: again } = loadModelFolder(fixtureModel(name));
      loadAdapter(again, peftDir, defaults);
      assert.deepEqual(tensorsOf(again), tensorsOf(model));
    });
  }

  it("stories260K-hf: a trained-looking adapter on q, k, v, o and the MLP survives the trip", (t) => {
    const dir = sharedData("stories260K-hf");
    if (!dir) return t.skip(SHARED_MISSING);
    const { model } = loadModelFolder(dir);
    const config = {
      r: 4,
      lora_alpha: 8,
      lora_dropout: 0,
      use_rslora: true,
      init_lora_weights: true as const,
      target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    };
    applyLoRA(model, config, { rng: new Rng(1) });
    const rng = new Rng(2);
    for (const [, l] of loraLayers(model)) l.lora_B.assign(l.lora_B.data.map(() => rng.normal() * 0.05));
    const ids = [[1, 403, 407, 261, 378, 106, 292, 261, 117, 411, 270, 427]];
    const want = lossOf(model, ids);
    const out = fresh();
    saveMlxAdapter(model, out, { baseModel: dir, dropout: 0 });
    const { model: back } = loadModelFolder(dir);
    loadAdapter(back, out, ["q_proj", "v_proj"]);
    assert.deepEqual(tensorsOf(back), tensorsOf(model));
    const got = lossOf(back, ids);
    assertClose([got], [want], "f32", "stories260K loss");
    const { model: base } = loadModelFolder(dir);
    assert.ok(Math.abs(lossOf(base, ids) - want) > 1e-3, "the adapter changes the loss");
  });
});

/** A PEFT adapter folder on the llama_untied fixture, with config overrides. */
function peftFolder(config: Record<string, unknown>, mutate?: (model: CausalLM) => void): { dir: string } {
  const { model } = loadModelFolder(fixtureModel("llama_untied"));
  const full = {
    r: 2,
    lora_alpha: 4,
    lora_dropout: 0,
    use_rslora: false,
    init_lora_weights: true as const,
    target_modules: ["q_proj", "v_proj"],
    ...config,
  };
  applyLoRA(model, full as never, { rng: new Rng(4) });
  const rng = new Rng(5);
  for (const [, l] of loraLayers(model)) l.lora_B.assign(l.lora_B.data.map(() => rng.normal() * 0.1));
  mutate?.(model);
  const dir = fresh();
  saveAdapter(model, dir, full as never, "llama_untied");
  return { dir };
}

function exportOf(dir: string) {
  const { model } = loadModelFolder(fixtureModel("llama_untied"));
  loadAdapter(model, dir, []);
  const out = fresh();
  const notes = saveMlxAdapter(model, out, { baseModel: "llama_untied", dropout: 0 });
  return { model, out, notes, config: JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")) };
}

describe("what mlx-lm's format cannot say", () => {
  const ids = expectedOf("llama_untied").input_ids;

  it("rank_pattern with an alpha_pattern at a power-of-two scale ratio: zero-padded and folded, exactly", () => {
    // q_proj r 2 alpha 4 (scale 2), v_proj r 1 alpha 4 (scale 4 = 2·2): pad v to rank 2, fold 2 into lora_b
    const { dir } = peftFolder({ rank_pattern: { v_proj: 1 } });
    const { model, out, notes, config } = exportOf(dir);
    assert.equal(config.lora_parameters.rank, 2);
    assert.equal(config.lora_parameters.scale, 2);
    assert.match(notes.join("\n"), /zero-padded 2 module\(s\) to rank 2/);
    assert.match(notes.join("\n"), /folded a power-of-two scale ratio into lora_b of 2 module/);
    const { model: back } = loadModelFolder(fixtureModel("llama_untied"));
    loadAdapter(back, out, []);
    assert.equal(lossOf(back, ids), lossOf(model, ids)); // exact: zeros and a power of two
  });

  it("a scale ratio that is not a power of two is refused, naming the modules", () => {
    const { dir } = peftFolder({ alpha_pattern: { "model.layers.1.self_attn.q_proj": 3 } });
    assert.throws(
      () => exportOf(dir),
      /one scale per adapter, and 1 module\(s\) have a scale that is not a power of two times 2 .*model\.layers\.1\.self_attn\.q_proj \(scale 1\.5\)/s,
    );
  });

  it("blocks that are not the last N: whole module paths in keys, and the loss is kept", () => {
    const { dir } = peftFolder({ layers_to_transform: [0] });
    const { model, out, notes, config } = exportOf(dir);
    assert.deepEqual(config.lora_parameters.keys, [
      "model.layers.0.self_attn.q_proj",
      "model.layers.0.self_attn.v_proj",
    ]);
    assert.match(notes[0]!, /keys name whole module paths/);
    const { model: back } = loadModelFolder(fixtureModel("llama_untied"));
    loadAdapter(back, out, []);
    assert.deepEqual(tensorsOf(back), tensorsOf(model));
    assert.equal(lossOf(back, ids), lossOf(model, ids));
  });

  it("a GPT-2 head is refused: mlx-lm's GPT-2 has no lm_head module", () => {
    const { model } = loadModelFolder(fixtureModel("gpt2"));
    const lora = {
      r: 2,
      lora_alpha: 4,
      lora_dropout: 0,
      use_rslora: false,
      init_lora_weights: true as const,
    };
    applyLoRA(model, { ...lora, target_modules: ["c_attn", "lm_head"] });
    assert.throws(
      () => saveMlxAdapter(model, fresh(), { baseModel: "x", dropout: 0 }),
      /"lm_head": mlx-lm's GPT-2 always computes its head as wte\.as_linear/,
    );
  });

  it("a head tied to the embedding is refused: mlx-lm has no lm_head module there", () => {
    const { model } = loadModelFolder(fixtureModel("llama_gqa_tied"));
    applyLoRA(model, {
      r: 2,
      lora_alpha: 4,
      lora_dropout: 0,
      use_rslora: false,
      init_lora_weights: true,
      target_modules: ["q_proj", "lm_head"],
    });
    assert.throws(
      () => saveMlxAdapter(model, fresh(), { baseModel: "x", dropout: 0 }),
      /"lm_head" shares its weight with the embedding/,
    );
  });
});

describe("mlx-lm folders that do not load", () => {
  const src = join(fixturesDir, "mlx", "llama_untied");
  const variant = (
    edit: (cfg: Record<string, unknown>) => void,
    tensors?: Record<string, [number[], number]>,
  ) => {
    const dir = fresh();
    mkdirSync(dir);
    const cfg = JSON.parse(readFileSync(join(src, "adapter_config.json"), "utf8"));
    edit(cfg);
    writeFileSync(join(dir, "adapter_config.json"), JSON.stringify(cfg));
    if (tensors)
      writeFileSync(
        join(dir, "adapters.safetensors"),
        serializeSafetensors(
          Object.entries(tensors).map(([name, [shape, v]]) => ({
            name,
            dtype: "F32",
            shape,
            data: new Float32Array(shape[0]! * shape[1]!).fill(v),
          })),
          { format: "mlx" },
        ),
      );
    else copyFileSync(join(src, "adapters.safetensors"), join(dir, "adapters.safetensors"));
    return dir;
  };
  const load = (dir: string) => {
    const { model } = loadModelFolder(fixtureModel("llama_untied"));
    return loadAdapter(model, dir, []);
  };

  it("DoRA and full fine-tunes are refused, saying what to do", () => {
    assert.throws(
      () => load(variant((c) => (c.fine_tune_type = "dora"))),
      /fine_tune_type "dora": mlx-lm DoRA adapters .* not supported here; train the mlx-lm adapter with --fine-tune-type lora/,
    );
    assert.throws(
      () => load(variant((c) => (c.fine_tune_type = "full"))),
      /not a LoRA adapter; fuse it in mlx-lm \(mlx_lm\.fuse\)/,
    );
  });

  it("every problem of lora_parameters at once", () => {
    assert.throws(
      () => load(variant((c) => (c.lora_parameters = { rank: 0, scale: -1, dropout: 1 }))),
      (e: Error) =>
        e.message.includes("adapter_config.json: 3 problems:") &&
        e.message.includes('"lora_parameters.rank" must be a positive integer, got 0') &&
        e.message.includes('"lora_parameters.scale" must be a positive finite number, got -1') &&
        e.message.includes('"lora_parameters.dropout" must be in [0, 1), got 1'),
    );
  });

  it("tensors load_adapters would reject: outside keys or num_layers, a DoRA magnitude, a wrong rank, a lone half", () => {
    const dir = variant(() => {}, {
      "model.layers.0.self_attn.q_proj.lora_a": [[32, 4], 0.1], // block 0: num_layers 1 adapts block 1 only
      "model.layers.0.self_attn.q_proj.lora_b": [[4, 24], 0.1],
      "model.layers.1.self_attn.k_proj.lora_a": [[32, 4], 0.1], // not in keys
      "model.layers.1.self_attn.k_proj.lora_b": [[4, 24], 0.1],
      "model.layers.1.self_attn.q_proj.m": [[1, 24], 1],
      "model.layers.1.self_attn.v_proj.lora_a": [[32, 3], 0.1],
      "model.layers.1.mlp.down_proj.lora_a": [[48, 4], 0.1],
    });
    assert.throws(
      () => load(dir),
      (e: Error) =>
        /adapters\.safetensors: not a LoRA adapter mlx-lm's load_adapters accepts \(5 problems\)/.test(
          e.message,
        ) &&
        e.message.includes('"model.layers.1.self_attn.q_proj.m" is a DoRA magnitude vector') &&
        e.message.includes('"model.layers.1.self_attn.v_proj.lora_a" has shape [32, 3], expected [in, 4]') &&
        e.message.includes('"model.layers.1.mlp.down_proj" has lora_a but no lora_b') &&
        e.message.includes('"model.layers.0.self_attn.q_proj" is not a module the config adapts') &&
        e.message.includes('"model.layers.1.self_attn.k_proj" is not a module the config adapts') &&
        e.message.includes("num_layers 1 of 2 blocks"),
    );
  });

  it("a folder with only numbered checkpoints names them", () => {
    const dir = variant(() => {});
    rmSync(join(dir, "adapters.safetensors"));
    copyFileSync(join(src, "0000100_adapters.safetensors"), join(dir, "0000100_adapters.safetensors"));
    assert.throws(
      () => load(dir),
      /adapters\.safetensors: not found; .*numbered checkpoints \(0000100_adapters\.safetensors\): pass one as --adapter .*0000100_adapters\.safetensors/,
    );
  });
});
