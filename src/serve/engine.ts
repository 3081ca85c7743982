/**
 * What the server serves: one base model, its tokenizer, and named adapters on it (an AdapterSet),
 * plus the per-sequence decode step. A request names the base or an adapter in `model`; an adapter
 * being unloaded takes no new requests and is deleted once its running sequences have finished.
 */

import { batchInvariant, invariantPrefill } from "../autograd/invariant.js";
import { noGrad } from "../autograd/tape.js";
import type { AdapterInput } from "../io/peft.js";
import { addAdapter } from "../io/peft.js";
import type { Tokenizer } from "../io/tokenizer.js";
import { AdapterSet } from "../lora/adapter-set.js";
import { generate, sampleToken } from "../models/generate.js";
import type { CausalLM } from "../models/model.js";
import { KVCache } from "../nn/kv-cache.js";
import { KVPool } from "../nn/kv-pool.js";
import { scratch } from "../tensor/alloc.js";
import { Rng } from "../tensor/random.js";
import { ApiError } from "./errors.js";
import type { DecodeStep, Sequence, SequenceSpec } from "./scheduler.js";

export interface EngineOptions {
  model: CausalLM;
  tokenizer: Tokenizer;
  /** The id of the base model in /v1/models (the model folder's name). */
  baseName: string;
  contextLength: number;
}

export interface ModelCard {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
  root: string;
  parent: string | null;
}

/** Sequence state of the per-sequence step: the generate() iterator, which owns its KV cache and sampler. */
type Decoding = Iterator<number>;

/** Sequence state of the batched step: its KV cache (in the step's pool), its sampler, its last token (-1: not prefilled). */
interface Batched {
  cache: KVCache;
  rng: Rng;
  last: number;
}

export class Engine {
  readonly model: CausalLM;
  readonly tokenizer: Tokenizer;
  readonly baseName: string;
  readonly contextLength: number;
  readonly adapters: AdapterSet;
  /** The batched step's KV caches, every sequence's in one pool (a layer's attention is one kernel call). */
  readonly kvPool = new KVPool();
  private readonly info = new Map<string, { created: number; root: string }>();
  private readonly inUse = new Map<string, number>();
  private readonly unloading = new Set<string>();
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(o: EngineOptions) {
    this.model = o.model;
    this.tokenizer = o.tokenizer;
    this.baseName = o.baseName;
    this.contextLength = o.contextLength;
    this.adapters = new AdapterSet(o.model);
  }

  /** The base and each adapter, as vLLM lists them (an adapter's parent is the base). */
  models(): ModelCard[] {
    const card = (id: string, root: string, parent: string | null, created: number): ModelCard => ({
      id,
      object: "model",
      created,
      owned_by: "lora-ts",
      root,
      parent,
    });
    return [
      card(this.baseName, this.baseName, null, this.created),
      ...this.servable().map((n) =>
        card(n, this.info.get(n)!.root, this.baseName, this.info.get(n)!.created),
      ),
    ];
  }

  /** Adapters that take requests. */
  servable(): string[] {
    return this.adapters.names().filter((n) => !this.unloading.has(n));
  }

  /** The adapter a request's `model` names (null: the base), or a 404 listing what is served. */
  resolve(model: string): string | null {
    if (model === this.baseName) return null;
    if (this.adapters.has(model) && !this.unloading.has(model)) return model;
    throw new ApiError(
      404,
      `The model \`${model}\` does not exist. Known models: ${[this.baseName, ...this.servable()].join(", ")}`,
      "not_found_error",
      "model",
      "model_not_found",
    );
  }

  /** Adds an adapter under `name` (a 400 when the name is taken or the adapter does not fit). */
  load(name: string, adapter: AdapterInput, root: string): void {
    if (name === this.baseName || this.adapters.has(name))
      throw new ApiError(
        400,
        `The lora adapter '${name}' has already been loaded; unload it first or pick another name`,
        "invalid_request_error",
        "lora_name",
      );
    try {
      addAdapter(this.adapters, name, adapter);
    } catch (e) {
      throw new ApiError(400, (e as Error).message, "invalid_request_error", "lora_path");
    }
    this.info.set(name, { created: Math.floor(Date.now() / 1000), root });
  }

  /** Removes an adapter: at once when idle, else after its running sequences finish (a 404 if unknown). */
  unload(name: string): void {
    if (!this.adapters.has(name) || this.unloading.has(name))
      throw new ApiError(
        404,
        `The lora adapter '${name}' is not loaded. Loaded adapters: ${this.servable().join(", ") || "none"}`,
        "not_found_error",
        "lora_name",
      );
    this.unloading.add(name);
    if (!this.inUse.get(name)) this.forget(name);
  }

  private forget(name: string): void {
    this.adapters.delete(name);
    this.info.delete(name);
    this.unloading.delete(name);
    this.inUse.delete(name);
  }

  /** Counts a sequence on its adapter until `release`, so an unload waits for it. */
  hold(adapter: string | null): () => void {
    if (adapter === null) return () => {};
    this.inUse.set(adapter, (this.inUse.get(adapter) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const left = (this.inUse.get(adapter) ?? 1) - 1;
      this.inUse.set(adapter, left);
      if (left === 0 && this.unloading.has(adapter)) this.forget(adapter);
    };
  }

  /** The batched step where the model has one (`decodeRows`: llama's family, gpt2), else the per-sequence one. */
  decodeStep(): DecodeStep<Decoding | Batched> {
    return this.model.decodeRows ? (this.stepBatched() as DecodeStep<Decoding | Batched>) : this.stepEach();
  }

  /**
   * The batched step: every running sequence's next token and every new short prompt's prefill
   * (invariantPrefill: up to INVARIANT_PREFILL tokens) in one `decodeRows` pass, decodes first: the base
   * products once for all rows, each row's own adapter term (AdapterSet.setRows), RoPE per row and
   * attention per sequence over its own cache. A longer prompt is prefilled on its own first, as
   * `generate` runs it (every row on its adapter: one loraRows call per layer, the bits of `generate`
   * with that adapter active). The pass runs batch-invariant (autograd/invariant.ts), as `generate`
   * runs a short prefill and every decode step, and samples each sequence with its own generator as
   * `generate` does, so the greedy output is `lora generate`'s token for token, alone or in any batch.
   */
  stepBatched(): DecodeStep<Batched> {
    const decodeRows = this.model.decodeRows!.bind(this.model);
    const V = this.model.vocabSize;
    const pool = this.kvPool;
    return {
      start: (spec: SequenceSpec) => {
        if (spec.prompt.length === 0)
          throw new Error("generate: the prompt is empty; give at least one token (e.g. BOS)");
        const expect = spec.prompt.length + spec.sampling.maxTokens;
        return { cache: new KVCache({ pool, expect }), rng: new Rng(spec.sampling.seed ?? 0), last: -1 };
      },
      end: (state: Batched) => state.cache.release(),
      // in a scratch scope (tensor/alloc.ts): the logits are sampled inside, and the caches copy their
      // rows in, so no op output outlives the step
      step: (batch: readonly Sequence<Batched>[]) =>
        scratch(() => {
          const tokens = new Array<number>(batch.length);
          const sample = (i: number, logits: Float32Array) => {
            const s = batch[i]!.state;
            tokens[i] = s.last = sampleToken(logits, batch[i]!.spec.sampling, s.rng);
          };
          // the pass: decodes (one row each), then short prompts (their tokens)
          const decodes: number[] = [];
          const prompts: number[] = [];
          try {
            batch.forEach((s, i) => {
              if (s.state.last >= 0) return decodes.push(i);
              if (invariantPrefill(s.spec.prompt.length)) return prompts.push(i);
              const prompt = Int32Array.from(s.spec.prompt);
              this.adapters.setRows(new Array<string | null>(prompt.length).fill(s.spec.adapter));
              const logits = noGrad(() => this.model.forward(prompt, [1, prompt.length], s.state.cache));
              sample(i, logits.data.subarray((prompt.length - 1) * V, prompt.length * V));
            });
            const pass = [...decodes, ...prompts];
            if (pass.length === 0) return tokens;
            const seqs = pass.map((i) => batch[i]!);
            const lengths = seqs.map((s) => (s.state.last >= 0 ? 1 : s.spec.prompt.length));
            const ids = new Int32Array(lengths.reduce((a, t) => a + t, 0));
            const adapters: (string | null)[] = [];
            let at = 0;
            seqs.forEach((s, b) => {
              if (s.state.last >= 0) ids[at] = s.state.last;
              else ids.set(s.spec.prompt, at);
              at += lengths[b]!;
              for (let t = 0; t < lengths[b]!; t++) adapters.push(s.spec.adapter);
            });
            this.adapters.setRows(adapters);
            const logits = noGrad(() =>
              batchInvariant(() =>
                decodeRows(
                  ids,
                  seqs.map((s) => s.state.cache),
                  lengths,
                ),
              ),
            );
            pass.forEach((i, b) => sample(i, logits.data.subarray(b * V, (b + 1) * V)));
          } finally {
            this.adapters.setRows(null);
          }
          return tokens;
        }),
    };
  }

  /**
   * The per-sequence decode step: each sequence runs `generate` (models/generate.ts) with its own KV
   * cache, after its adapter is made active. Its first step is the prompt's prefill. Greedy output is
   * therefore `lora generate`'s token for token, whatever else is running.
   */
  stepEach(): DecodeStep<Decoding> {
    return {
      start: (spec: SequenceSpec) => generate(this.model, spec.prompt, spec.sampling),
      step: (batch: readonly Sequence<Decoding>[]) =>
        batch.map((s) => {
          this.adapters.set(s.spec.adapter);
          const r = s.state.next();
          if (r.done) throw new Error("generate ended before the sequence was finished");
          return r.value;
        }),
    };
  }
}
