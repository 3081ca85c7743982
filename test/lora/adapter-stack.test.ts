/**
 * Several adapters on one model through the model-level functions (addAdapter(model, ...), setAdapter,
 * disableAdapters, deleteAdapter): stacked adapters equal the base weights plus both weighted deltas
 * (W0 + Σ w·s·B·A, formed independently in f64); disabling gives the base bit for bit and restores the
 * stack; switching back and forth gives the same logits bit for bit; no W0 is copied.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { it } from "node:test";
import { noGrad } from "../../src/autograd/tape.js";
import { readAdapterInput } from "../../src/io/node/adapter-folder.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { type AdapterInput, adapterLayers, adapterTensors, addAdapter } from "../../src/io/peft.js";
import { parseSafetensors, serializeSafetensors } from "../../src/io/safetensors.js";
import { adapterSetOf, deleteAdapter, disableAdapters, setAdapter } from "../../src/lora/adapter-set.js";
import { type LoraConfig, loraScaling } from "../../src/lora/config.js";
import { applyLoRA, linearLayers, loraLayers } from "../../src/lora/inject.js";
import { MultiLoRALinear } from "../../src/lora/multi-layer.js";
import type { CausalLM } from "../../src/models/model.js";
import { Rng } from "../../src/tensor/random.js";
import { fixtureModel } from "../helpers.js";

const dir = fixtureModel("llama_gqa_tied");
const ids = Int32Array.from([1, 5, 9, 14, 3, 27, 40, 2]);
const logits = (m: CausalLM) => noGrad(() => m.forward(ids, [1, ids.length]).data.slice());
const fresh = () => loadModelFolder(dir).model;

const x: AdapterInput = readAdapterInput(join(dir, "adapter"), { defaultTargets: ["q_proj", "v_proj"] });

/** A second adapter that shares q_proj with the fixture (so the deltas add there) and adds o_proj; rsLoRA. */
function second(): AdapterInput {
  const config: LoraConfig = {
    r: 2,
    lora_alpha: 3,
    lora_dropout: 0,
    target_modules: ["q_proj", "o_proj"],
    use_rslora: true,
    init_lora_weights: true,
  };
  const m = fresh();
  applyLoRA(m, config, { rng: new Rng(5) });
  const rng = new Rng(6);
  for (const [, l] of loraLayers(m)) l.lora_B.data.forEach((_, i, b) => (b[i] = 0.2 * rng.normal()));
  return {
    config,
    tensors: parseSafetensors(serializeSafetensors(adapterTensors(m)), "y").tensors,
    source: "y",
  };
}
const y = second();

/** Logits of a fresh base whose adapted weights are W0 + Σ w·s·B·A, summed in f64. */
function folded(parts: Array<[AdapterInput, number]>): Float32Array {
  const m = fresh();
  const linears = new Map(linearLayers(m));
  const sums = new Map<string, Float64Array>();
  for (const [a, w] of parts)
    for (const l of adapterLayers(m, a.config, a.tensors, a.source)) {
      const base = linears.get(l.path)!;
      const [out, inF] = [base.outFeatures, base.inFeatures];
      const acc = sums.get(l.path) ?? Float64Array.from(base.weight.data);
      const s = w * loraScaling(l.r, l.alpha, l.rslora ?? false);
      for (let o = 0; o < out; o++)
        for (let i = 0; i < inF; i++) {
          let d = 0;
          for (let k = 0; k < l.r; k++) d += l.B.data[o * l.r + k]! * l.A.data[k * inF + i]!;
          acc[o * inF + i]! += s * d;
        }
      sums.set(l.path, acc);
    }
  for (const [path, acc] of sums) {
    const base = linears.get(path)!;
    base.weight = base.weight.clone(false); // the head may share the embedding's tensor
    base.weight.data.set(Float32Array.from(acc));
  }
  m.eval();
  return logits(m);
}

function close(got: Float32Array, want: Float32Array, what: string) {
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  assert.ok(worst <= 1e-5 * scale + 1e-6, `${what}: max |diff| ${worst} (logits up to ${scale})`);
}

it("stacked adapters equal the base plus both weighted deltas, and share the base weights", () => {
  const model = fresh();
  const weightsBefore = new Map(linearLayers(model).map(([p, l]) => [p, l.weight]));
  addAdapter(model, "x", x);
  addAdapter(model, "y", y);
  // the wrapped layers hold the very W0 tensors the model had: nothing was copied
  for (const [p, l] of linearLayers(model)) assert.equal(l.weight, weightsBefore.get(p), p);
  const base = folded([]);
  setAdapter(model, ["x", "y"]);
  assert.equal(adapterSetOf(model).active, "x+y");
  const both = logits(model);
  close(
    both,
    folded([
      [x, 1],
      [y, 1],
    ]),
    "x + y",
  );
  assert.notDeepEqual(both, base);
  setAdapter(model, [
    { name: "x", weight: 0.5 },
    { name: "y", weight: -1.5 },
  ]);
  close(
    logits(model),
    folded([
      [x, 0.5],
      [y, -1.5],
    ]),
    "0.5·x − 1.5·y",
  );
  setAdapter(model, "y");
  close(logits(model), folded([[y, 1]]), "y alone");
});

it("disableAdapters gives the base bit for bit and restores the stack, also after a throw or a promise", async () => {
  const base = logits(fresh());
  const model = fresh();
  addAdapter(model, "x", x);
  addAdapter(model, "y", y);
  setAdapter(model, [{ name: "x", weight: 0.7 }, "y"]);
  const stacked = logits(model);
  assert.deepEqual(
    disableAdapters(model, () => logits(model)),
    base,
  );
  assert.deepEqual(adapterSetOf(model).activeAdapters, [
    { name: "x", weight: 0.7 },
    { name: "y", weight: 1 },
  ]);
  assert.deepEqual(logits(model), stacked);
  assert.throws(
    () =>
      disableAdapters(model, () => {
        throw new Error("inside");
      }),
    /inside/,
  );
  assert.deepEqual(logits(model), stacked);
  const inside = await disableAdapters(model, async () => logits(model));
  assert.deepEqual(inside, base);
  assert.deepEqual(logits(model), stacked);
});

it("switching back and forth between single and stacked adapters gives the same logits bit for bit", () => {
  const model = fresh();
  addAdapter(model, "x", x);
  addAdapter(model, "y", y);
  const seen = new Map<string, Float32Array>();
  const choices: Array<[string, Parameters<typeof setAdapter>[1]]> = [
    ["x", "x"],
    ["y", "y"],
    ["xy", ["x", "y"]],
    ["none", null],
    ["half", [{ name: "x", weight: 0.5 }]],
  ];
  for (let round = 0; round < 3; round++)
    for (const [key, choice] of round === 1 ? [...choices].reverse() : choices) {
      setAdapter(model, choice);
      const l = logits(model);
      if (seen.has(key)) assert.deepEqual(l, seen.get(key), `${key}, round ${round}`);
      else seen.set(key, l);
    }
  assert.notDeepEqual(seen.get("x"), seen.get("half"));
});

it("deleteAdapter drops it from the active stack; bad choices are refused, naming the adapter", () => {
  const model = fresh();
  addAdapter(model, "x", x);
  addAdapter(model, "y", y);
  setAdapter(model, ["x", "y"]);
  deleteAdapter(model, "x");
  assert.deepEqual(adapterSetOf(model).activeAdapters, [{ name: "y", weight: 1 }]);
  close(logits(model), folded([[y, 1]]), "y after deleting x");
  const q = model.namedModules().find(([p]) => p === "model.layers.0.self_attn.q_proj")![1];
  assert.ok(q instanceof MultiLoRALinear && !q.has("x") && q.has("y"));
  assert.throws(() => setAdapter(model, ["y", "x"]), /no adapter named "x"; loaded: y/);
  assert.throws(
    () => setAdapter(model, [{ name: "y", weight: Number.NaN }]),
    /adapter "y": weight NaN is not a finite number/,
  );
  assert.throws(() => setAdapter(model, ["y", "y"]), /"y" is listed twice/);
  // a refused choice changed nothing
  assert.deepEqual(adapterSetOf(model).activeAdapters, [{ name: "y", weight: 1 }]);
});
