/**
 * The batched decode step (models' decodeRows, autograd/rows.ts, AdapterSet.setRows, batch-invariant
 * mode) against per-sequence steps: on every backend, a batch of 11 sequences with ragged cache lengths
 * (1 to 11 cached positions) and mixed adapters (the base and three adapters, one of them on the head)
 * gives each row exactly the logits that row's sequence gets alone with its adapter active, bit for
 * bit, over two consecutive steps; llama (with GQA and, as mistral, a sliding window) and gpt2.
 * 11 rows: more than the native GEMM's 8-row GEMV, so its chunking is exercised. And a batched prefill:
 * new prompts of ragged lengths in the same pass as decodes each get the logits of their prefill alone
 * in batch-invariant mode (as `generate` runs a short prompt's). Each with the batched caches in one
 * KVPool (as the server keeps them; expecting 1 position each, so every step moves every region) and on
 * their own.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { batchInvariant } from "../../src/autograd/invariant.js";
import { noGrad } from "../../src/autograd/tape.js";
import { availableBackends, setBackend } from "../../src/kernels/index.js";
import "../../src/kernels/node/index.js";
import { AdapterSet } from "../../src/lora/adapter-set.js";
import { buildModel, randomParams } from "../../src/models/index.js";
import { KVCache } from "../../src/nn/kv-cache.js";
import { KVPool } from "../../src/nn/kv-pool.js";
import { Rng } from "../../src/tensor/random.js";
import { Tensor } from "../../src/tensor/tensor.js";

const V = 97;
const FAMILIES: [string, Record<string, unknown>, string[]][] = [
  [
    "llama",
    {
      model_type: "llama",
      vocab_size: V,
      hidden_size: 40,
      intermediate_size: 300,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 64,
    },
    ["self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.down_proj"],
  ],
  [
    "mistral (sliding window 4)",
    {
      model_type: "mistral",
      vocab_size: V,
      hidden_size: 32,
      intermediate_size: 48,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 1,
      max_position_embeddings: 64,
      sliding_window: 4,
    },
    ["self_attn.k_proj", "mlp.gate_proj", "mlp.up_proj"],
  ],
  [
    "gpt2",
    { model_type: "gpt2", vocab_size: V, n_embd: 24, n_head: 4, n_layer: 2, n_positions: 32 },
    ["attn.c_attn", "attn.c_proj", "mlp.c_fc"],
  ],
];
const ROWS = 11;
const ADAPTERS = [null, "a", "b", "c"] as const;
// the batched caches: in one pool (every region moved by each step: 1 position expected), or on their own
const CACHES = [
  ["pooled caches", () => new KVPool()],
  ["caches on their own", () => null],
] as const;
const cacheIn = (pool: KVPool | null) => (pool ? new KVCache({ pool, expect: 1 }) : new KVCache());

function setup(config: Record<string, unknown>, targets: string[]) {
  const model = buildModel(config, randomParams(3, 0.2));
  const set = new AdapterSet(model);
  const layers = model.numLayers;
  const prefix = config.model_type === "gpt2" ? "transformer.h" : "model.layers";
  const modules = new Map(model.namedModules());
  ["a", "b", "c"].forEach((name, n) => {
    const rng = new Rng(10 + n);
    const paths = Array.from({ length: layers }, (_, i) => targets.map((t) => `${prefix}.${i}.${t}`)).flat();
    if (name === "c") paths.push("lm_head");
    set.add(
      name,
      paths.map((path) => {
        const m = modules.get(path) as unknown as { inFeatures: number; outFeatures: number };
        const r = 4 + 2 * n;
        return {
          path,
          r,
          alpha: 8,
          A: Tensor.randn([r, m.inFeatures], rng, 0.3),
          B: Tensor.randn([m.outFeatures, r], rng, 0.3),
        };
      }),
    );
  });
  return { model, set };
}

type Setup = ReturnType<typeof setup>;
interface Seq {
  adapter: string | null;
  alone: KVCache;
  batched: KVCache;
}

/** One decode step of each sequence alone, its adapter active: each one's logits. */
function stepAlone({ model, set }: Setup, seqs: readonly Seq[], ids: Int32Array): Float32Array[] {
  const logits = seqs.map((s, b) => {
    set.set(s.adapter);
    return model.forward(ids.subarray(b, b + 1), [1, 1], s.alone).data;
  });
  set.set(null);
  return logits;
}

/** One batched pass (decodeRows in batch-invariant mode), each of its rows on its own adapter. */
function stepBatched(
  { model, set }: Setup,
  rowAdapters: readonly (string | null)[],
  ids: Int32Array,
  caches: readonly KVCache[],
  lengths?: readonly number[],
) {
  set.setRows(rowAdapters);
  try {
    return batchInvariant(() => model.decodeRows!(ids, caches, lengths));
  } finally {
    set.setRows(null);
  }
}

for (const backendName of availableBackends())
  describe(`batched decode step on ${backendName}`, () => {
    for (const [family, config, targets] of FAMILIES)
      for (const [caches, makePool] of CACHES)
        it(`${family}, ${caches}: each row's logits equal its sequence stepped alone, bit for bit`, () => {
          setBackend(backendName);
          const m = setup(config, targets);
          const { model, set } = m;
          const pool = makePool();
          const rng = new Rng(99);
          const seqs = Array.from({ length: ROWS }, (_, i) => ({
            adapter: ADAPTERS[i % ADAPTERS.length]!,
            prompt: Int32Array.from({ length: 1 + ((i * 5) % ROWS) }, () => rng.int(V)),
            alone: new KVCache(),
            batched: cacheIn(pool),
          }));
          noGrad(() => {
            for (const s of seqs) {
              set.set(s.adapter);
              model.forward(s.prompt, [1, s.prompt.length], s.alone);
              model.forward(s.prompt, [1, s.prompt.length], s.batched);
            }
            let ids = Int32Array.from(seqs, () => rng.int(V));
            for (let step = 0; step < 2; step++) {
              const want = stepAlone(m, seqs, ids);
              const got = stepBatched(
                m,
                seqs.map((s) => s.adapter),
                ids,
                seqs.map((s) => s.batched),
              );
              assert.deepEqual(got.shape, [ROWS, 1, V]);
              seqs.forEach((s, b) => {
                const row = got.data.subarray(b * V, (b + 1) * V);
                const bad = row.findIndex((v, j) => !Object.is(v, want[b]![j]));
                assert.equal(
                  bad,
                  -1,
                  `step ${step}, row ${b} (adapter ${s.adapter}, ${s.batched.length - 1} cached): logit ${bad} is ${row[bad]}, alone ${want[b]![bad]}`,
                );
                assert.equal(s.batched.length, s.alone.length);
              });
              // the adapters change the numbers (else the test would not see a wrong row's adapter)
              assert.ok(want.some((w, b) => b > 0 && w.some((v, j) => v !== want[0]![j])));
              ids = Int32Array.from(seqs, () => rng.int(V));
            }
          });
          if (pool) {
            for (const s of seqs) s.batched.release();
            assert.equal(pool.inUse, 0, "every region went back to the pool");
          }
        });
  });

for (const backendName of availableBackends())
  describe(`batched prefill on ${backendName}`, () => {
    for (const [family, config, targets] of FAMILIES)
      for (const [caches, makePool] of CACHES)
        it(`${family}, ${caches}: new prompts of ragged lengths joining decodes in one pass each get their prefill alone, bit for bit`, () => {
          setBackend(backendName);
          const m = setup(config, targets);
          const { model, set } = m;
          const pool = makePool();
          const rng = new Rng(5);
          // 5 running sequences (decodes), then 6 new prompts of 1 to 11 tokens (past the GEMV's 8 rows)
          const decodes = Array.from({ length: 5 }, (_, i) => ({
            adapter: ADAPTERS[i % ADAPTERS.length]!,
            tokens: Int32Array.from({ length: 1 + i }, () => rng.int(V)),
            alone: new KVCache(),
            batched: cacheIn(pool),
          }));
          const prompts = [3, 1, 11, 7, 2, 9].map((T, i) => ({
            adapter: ADAPTERS[(i + 1) % ADAPTERS.length]!,
            tokens: Int32Array.from({ length: T }, () => rng.int(V)),
            alone: new KVCache(),
            batched: cacheIn(pool),
          }));
          noGrad(() => {
            for (const s of decodes) {
              set.set(s.adapter);
              model.forward(s.tokens, [1, s.tokens.length], s.alone);
              model.forward(s.tokens, [1, s.tokens.length], s.batched);
            }
            const next = Int32Array.from(decodes, () => rng.int(V));
            const seqs = [...decodes, ...prompts];
            // alone, in batch-invariant mode (as generate runs a prompt of up to INVARIANT_PREFILL tokens;
            // the 9- and 11-token prompts, longer than the engine batches, check the mechanism past it)
            const want = seqs.map((s, b) => {
              set.set(s.adapter);
              const ids = b < decodes.length ? next.subarray(b, b + 1) : s.tokens;
              const out = batchInvariant(() => model.forward(ids, [1, ids.length], s.alone));
              return out.data.subarray((ids.length - 1) * V);
            });
            set.set(null);
            const lengths = seqs.map((s, b) => (b < decodes.length ? 1 : s.tokens.length));
            const ids = Int32Array.from([...next, ...prompts.flatMap((s) => [...s.tokens])]);
            const got = stepBatched(
              m,
              seqs.flatMap((s, b) => new Array<string | null>(lengths[b]!).fill(s.adapter)),
              ids,
              seqs.map((s) => s.batched),
              lengths,
            );
            assert.deepEqual(got.shape, [seqs.length, 1, V]);
            seqs.forEach((s, b) => {
              const row = got.data.subarray(b * V, (b + 1) * V);
              const bad = row.findIndex((v, j) => !Object.is(v, want[b]![j]));
              assert.equal(
                bad,
                -1,
                `sequence ${b} (${lengths[b]} rows, adapter ${s.adapter}): logit ${bad} differs`,
              );
              assert.equal(s.batched.length, s.alone.length);
            });
            // the caches it left: one more decode step of every sequence, batched, against each alone
            const step = Int32Array.from(seqs, () => rng.int(V));
            const after = stepAlone(m, seqs, step);
            const then = stepBatched(
              m,
              seqs.map((s) => s.adapter),
              step,
              seqs.map((s) => s.batched),
            );
            seqs.forEach((_, b) => {
              const row = then.data.subarray(b * V, (b + 1) * V);
              assert.ok(
                row.every((v, j) => Object.is(v, after[b]![j])),
                `sequence ${b}: the decode after the batched prefill differs`,
              );
            });
          });
          if (pool) {
            for (const s of [...decodes, ...prompts]) s.batched.release();
            assert.equal(pool.inUse, 0, "every region went back to the pool");
          }
        });
  });
