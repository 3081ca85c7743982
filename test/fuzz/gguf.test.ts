/**
 * Fuzzing the GGUF reader (io/gguf.ts) and the readers on top of it: the model (gguf-model.ts, then
 * the loader), the tokenizer (gguf-tokenizer.ts, then the Tokenizer) and the LoRA adapter
 * (gguf-adapter.ts). Inputs: byte mutations of real files (truncation, bit flips, counts and lengths
 * up to 2^64 − 1) and files rewritten with hostile metadata (huge block, head and vocab counts, NaN
 * and Inf floats, wrong value types). Each case gives a valid result or our own error naming the file;
 * a header that parses is written again by gguf-write.ts and reads back the same.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { type GGUFHeader, parseGGUFHeader } from "../../src/io/gguf.js";
import { readGGUFAdapter } from "../../src/io/gguf-adapter.js";
import { ggufModelConfig, ggufTensorPlan, ggufToHFTensor, ROPE_FREQS } from "../../src/io/gguf-model.js";
import { dequantize } from "../../src/io/gguf-quants.js";
import { ggufTokenizerFiles } from "../../src/io/gguf-tokenizer.js";
import { GGUFValueType } from "../../src/io/gguf-types.js";
import { serializeGGUF, type GGUFValue as WriteValue } from "../../src/io/gguf-write.js";
import { checkModelTensors, loadModelFromTensors } from "../../src/io/model-loader.js";
import { Tokenizer } from "../../src/io/tokenizer.js";
import { fixturesDir } from "../helpers.js";
import { checkCase, count, hostileU64, mutateBytes, params, report } from "./harness.js";

const SRC = "fuzz/model.gguf";
const read = (p: string) => new Uint8Array(readFileSync(join(fixturesDir, p)));
const MODELS = [
  "gguf/models/llama_gqa_tied.f16.gguf",
  "gguf/models/qwen2.q8_0.gguf",
  "gguf/models/gpt2.f32.gguf",
].map(read);
const VALUES = read("gguf/values.gguf");
const ADAPTER = read("gguf-adapter/llama_gqa_tied/plain/converter-f16.gguf");
const MODEL_CONFIG = JSON.parse(
  readFileSync(join(fixturesDir, "models/llama_gqa_tied/config.json"), "utf8"),
) as Record<string, unknown>;
const MEMORY = 2 ** 28;

/** A GGUF model read from memory as loadGGUFModelFile reads a file: header, config, plan, check, load. */
function loadModel(bytes: Uint8Array, h: GGUFHeader, full: boolean) {
  const slice = (t: { offset: number; bytes: number }) => bytes.subarray(t.offset, t.offset + t.bytes);
  const freqs = h.tensors.find((t) => t.name === ROPE_FREQS);
  const ropeFreqs = freqs ? dequantize(slice(freqs), freqs.type, freqs.elements, ROPE_FREQS) : undefined;
  const config = ggufModelConfig(h, SRC, ropeFreqs);
  const { plan, infos } = ggufTensorPlan(h, config, SRC);
  checkModelTensors(config, infos, SRC, { memoryLimit: MEMORY });
  if (!full) return config;
  const tensors = new Map(plan.map((p) => [p.hfName, ggufToHFTensor(p, slice(p.tensor))]));
  loadModelFromTensors(config, tensors, SRC, { memoryLimit: MEMORY });
  return config;
}

/** The parsed metadata as gguf-write takes it, or null where it cannot (arrays of arrays). */
function writable(h: GGUFHeader): Array<[string, WriteValue]> | null {
  const out: Array<[string, WriteValue]> = [];
  for (const [key, value] of h.metadata) {
    const info = h.types.get(key)!;
    if (info.type === GGUFValueType.ARRAY) {
      if (info.arrayType === GGUFValueType.ARRAY) return null;
      out.push([key, { type: GGUFValueType.ARRAY, itemType: info.arrayType, value } as WriteValue]);
    } else out.push([key, { type: info.type, value } as WriteValue]);
  }
  return out;
}

/** A parsed header written again and read back: the same metadata, tensor table and tensor bytes. */
function roundTrip(bytes: Uint8Array, h: GGUFHeader): void {
  const meta = writable(h);
  if (!meta) return;
  const tensors = h.tensors.map((t) => ({
    name: t.name,
    type: t.type,
    ne: t.dims,
    data: bytes.subarray(t.offset, t.offset + t.bytes),
  }));
  let again: Uint8Array;
  try {
    again = serializeGGUF(meta, tensors);
  } catch (e) {
    // the writer refuses what ggml would (a name over 63 bytes); the reader took it: both are ggml's rules
    assert.match((e as Error).message, /63|bytes|alignment/, (e as Error).message);
    return;
  }
  const h2 = parseGGUFHeader(again, "again");
  // the writer adds general.alignment (the default, 32) where the file had none
  const added = h.metadata.has("general.alignment") ? [] : ["general.alignment"];
  assert.deepEqual(
    [...h2.metadata].filter(([k]) => !added.includes(k)),
    [...h.metadata],
  );
  assert.deepEqual(
    h2.tensors.map(({ name, dims, type, bytes: n }) => ({ name, dims, type, n })),
    h.tensors.map(({ name, dims, type, bytes: n }) => ({ name, dims, type, n })),
  );
  for (const [i, t] of h2.tensors.entries()) {
    const t1 = h.tensors[i]!;
    assert.deepEqual(
      again.subarray(t.offset, t.offset + t.bytes),
      bytes.subarray(t1.offset, t1.offset + t1.bytes),
    );
  }
}

function modelProperty(bytes: Uint8Array, full: boolean): void {
  count("gguf");
  const limits = { source: SRC, inputBytes: bytes.length };
  const header = checkCase(() => parseGGUFHeader(bytes, SRC), limits);
  if (!header.ok) {
    assert.equal(header.error.name, "GGUFError", header.error.message);
    return;
  }
  roundTrip(bytes, header.value);
  checkCase(() => loadModel(bytes, header.value, full), limits);
  const tok = checkCase(() => ggufTokenizerFiles(header.value, SRC), limits);
  if (tok.ok && full) checkCase(() => Tokenizer.fromJSON(tok.value, SRC).encode("hello world"), limits);
}

// hostile values for the numbers a model's metadata holds
const KEYS = [
  "block_count",
  "embedding_length",
  "feed_forward_length",
  "attention.head_count",
  "attention.head_count_kv",
  "context_length",
  "vocab_size",
  "rope.dimension_count",
  "attention.layer_norm_rms_epsilon",
  "rope.freq_base",
];
const hostileNumber = fc.oneof(
  hostileU64.map((v) => ({ type: GGUFValueType.UINT64, value: v }) as WriteValue),
  fc.nat(0xffffffff).map((v) => ({ type: GGUFValueType.UINT32, value: v }) as WriteValue),
  fc
    .integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })
    .map((v) => ({ type: GGUFValueType.INT32, value: v }) as WriteValue),
  fc
    .constantFrom(Number.NaN, Number.POSITIVE_INFINITY, -1, 0, 1e-30, 3.4e38)
    .map((v) => ({ type: GGUFValueType.FLOAT32, value: v }) as WriteValue),
  fc.string({ maxLength: 8 }).map((v) => ({ type: GGUFValueType.STRING, value: v }) as WriteValue),
  fc.boolean().map((v) => ({ type: GGUFValueType.BOOL, value: v }) as WriteValue),
);

/** A model file rewritten with 1–3 metadata values replaced (or the tokenizer's token list cut). */
function rewritten(base: Uint8Array): fc.Arbitrary<Uint8Array> {
  const h = parseGGUFHeader(base, "base");
  const arch = String(h.metadata.get("general.architecture"));
  const meta = writable(h)!;
  const tensors = h.tensors.map((t) => ({
    name: t.name,
    type: t.type,
    ne: t.dims,
    data: base.subarray(t.offset, t.offset + t.bytes),
  }));
  const edit = fc.tuple(fc.constantFrom(...KEYS), hostileNumber);
  return fc
    .tuple(fc.array(edit, { minLength: 1, maxLength: 3 }), fc.option(fc.nat(400)))
    .map(([edits, cut]) => {
      const m = new Map(meta);
      for (const [k, v] of edits) m.set(`${arch}.${k}`, v);
      const tokens = m.get("tokenizer.ggml.tokens");
      if (cut !== null && tokens && Array.isArray(tokens.value))
        m.set("tokenizer.ggml.tokens", { ...tokens, value: tokens.value.slice(0, cut) } as WriteValue);
      try {
        return serializeGGUF([...m], tensors);
      } catch {
        return base;
      }
    });
}

describe("fuzz: GGUF", () => {
  it("mutated model files: the header, config, tensor plan and tokenizer, or a GGUF error naming the file", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: MODELS.length - 1 }).chain((i) => mutateBytes(MODELS[i]!)),
        (b) => modelProperty(b, false),
      ),
      params(500),
    );
  });

  it("model files with hostile metadata (10^12 blocks, NaN epsilon, a cut vocabulary), loaded in full", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: MODELS.length - 1 }).chain((i) => rewritten(MODELS[i]!)),
        (b) => modelProperty(b, true),
      ),
      params(120),
    );
  });

  it("mutated metadata of every value type (values.gguf): parsed, written and read back the same", () => {
    fc.assert(
      fc.property(mutateBytes(VALUES), (b) => modelProperty(b, false)),
      params(600),
    );
  });

  it("mutated GGUF LoRA adapters read against their base model", () => {
    fc.assert(
      fc.property(mutateBytes(ADAPTER), (bytes) => {
        count("gguf");
        const r = checkCase(() => readGGUFAdapter(bytes, SRC, MODEL_CONFIG), {
          source: SRC,
          inputBytes: bytes.length,
        });
        if (r.ok) for (const t of r.value.tensors.values()) assert.ok(t.bytes.byteLength <= 4 * bytes.length);
      }),
      params(500),
    );
    report("gguf");
  });
});
