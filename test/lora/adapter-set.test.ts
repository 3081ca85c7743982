/**
 * Named adapters on one base (AdapterSet): with adapter X active the model gives the same bits as a
 * fresh base loaded with X alone (attachAdapter); with none active, the base's bits; switching back
 * and forth is exact. Adapter 1 is the PEFT-made fixture (q_proj, v_proj); adapter 2 targets other
 * modules (k_proj, o_proj, down_proj) with random non-zero B, so each leaves the other's layers at the base.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { it } from "node:test";
import { noGrad } from "../../src/autograd/tape.js";
import { readAdapterInput } from "../../src/io/node/adapter-folder.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { type AdapterInput, adapterTensors, addAdapter, attachAdapter } from "../../src/io/peft.js";
import { parseSafetensors, serializeSafetensors } from "../../src/io/safetensors.js";
import { AdapterSet } from "../../src/lora/adapter-set.js";
import type { LoraConfig } from "../../src/lora/config.js";
import { applyLoRA, loraLayers } from "../../src/lora/inject.js";
import { MultiLoRALinear } from "../../src/lora/multi-layer.js";
import type { CausalLM } from "../../src/models/model.js";
import { Rng } from "../../src/tensor/random.js";
import { fixtureModel } from "../helpers.js";

const dir = fixtureModel("llama_gqa_tied");
const ids = Int32Array.from([1, 5, 9, 14, 3, 27, 40, 2]);
const logits = (m: CausalLM) => noGrad(() => m.forward(ids, [1, ids.length]).data.slice());
const fresh = () => loadModelFolder(dir).model;

const fixture: AdapterInput = readAdapterInput(join(dir, "adapter"), {
  defaultTargets: ["q_proj", "v_proj"],
});

/** A second adapter on other modules, with non-zero B so that it changes the output. */
function otherAdapter(): AdapterInput {
  const config: LoraConfig = {
    r: 4,
    lora_alpha: 8,
    lora_dropout: 0,
    target_modules: ["k_proj", "o_proj", "down_proj"],
    use_rslora: false,
    init_lora_weights: true,
  };
  const m = fresh();
  applyLoRA(m, config, { rng: new Rng(3) });
  const rng = new Rng(4);
  for (const [, l] of loraLayers(m)) l.lora_B.data.forEach((_, i, b) => (b[i] = 0.2 * rng.normal()));
  const bytes = serializeSafetensors(adapterTensors(m));
  return { config, tensors: parseSafetensors(bytes, "other").tensors, source: "other" };
}
const other = otherAdapter();

function alone(a: AdapterInput): Float32Array {
  const m = fresh();
  attachAdapter(m, a.config, a.tensors, a.source);
  m.eval();
  return logits(m);
}

it("an active adapter equals a model loaded with it alone; none equals the base; switching is exact", () => {
  const base = logits(fresh());
  const onlyX = alone(fixture);
  const onlyY = alone(other);
  assert.notDeepEqual(onlyX, base);
  assert.notDeepEqual(onlyY, base);

  const model = fresh();
  const set = new AdapterSet(model);
  assert.deepEqual(addAdapter(set, "x", fixture).length, 4);
  addAdapter(set, "y", other);
  assert.deepEqual(set.names(), ["x", "y"]);
  // one base weight, shared: the wrapped layer holds the very tensor the model had
  const q = model.namedModules().find(([p]) => p === "model.layers.0.self_attn.q_proj")![1];
  assert.ok(q instanceof MultiLoRALinear);

  assert.equal(set.active, null);
  assert.deepEqual(logits(model), base);
  for (const name of ["x", "y", "x", null, "y", null, "x"] as const) {
    set.set(name);
    assert.deepEqual(logits(model), name === "x" ? onlyX : name === "y" ? onlyY : base, `active ${name}`);
  }
  set.disable();
  assert.deepEqual(logits(model), base);
});

it("delete frees an adapter and leaves the others exact; errors name what is loaded", () => {
  const model = fresh();
  const set = new AdapterSet(model);
  addAdapter(set, "x", fixture);
  addAdapter(set, "y", other);
  set.set("x");
  set.delete("x");
  assert.equal(set.active, null);
  assert.deepEqual(logits(model), logits(fresh()));
  set.set("y");
  assert.deepEqual(logits(model), alone(other));
  assert.throws(() => set.set("x"), /no adapter named "x"; loaded: y/);
  assert.throws(() => addAdapter(set, "y", other), /already loaded/);
  // re-adding under the freed name works, and is again exact
  addAdapter(set, "x", fixture);
  set.set("x");
  assert.deepEqual(logits(model), alone(fixture));
});

it("refuses a model that already holds single-adapter LoRA layers", () => {
  const m = fresh();
  attachAdapter(m, fixture.config, fixture.tensors, fixture.source);
  assert.throws(() => new AdapterSet(m), /single-adapter LoRA layers/);
});
