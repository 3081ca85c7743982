/**
 * Fuzzing the safetensors reader (io/safetensors.ts, and the file reader of io/node over it): mutated
 * files (truncated, bit-flipped, lying lengths up to 2^64 − 1) and generated headers (unknown dtypes,
 * shapes whose product passes 2^53, reversed and overlapping offsets, duplicate keys, deep nesting,
 * invalid UTF-8). Each case gives a valid file or a SafetensorsError naming the file; a file that
 * parses re-serialises to the same tensors.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { readSafetensorsFile } from "../../src/io/node/safetensors-file.js";
import {
  describeNonFinite,
  parseSafetensors,
  type SafetensorsFile,
  type SerializableDType,
  serializeSafetensors,
  tensorToFloat32,
} from "../../src/io/safetensors.js";
import { DTYPE_SIZE } from "../../src/tensor/dtype.js";
import {
  checkCase,
  count,
  deepText,
  hostileInt,
  hostileJson,
  mutateBytes,
  params,
  report,
} from "./harness.js";

const SRC = "fuzz/model.safetensors";
const tmp = mkdtempSync(join(tmpdir(), "lora-fuzz-st-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

// A small valid file: several dtypes, a NaN and an Inf in F16 and BF16 (the reader must not mind them;
// the loaders check values), an empty tensor and metadata.
const half = new Float32Array([1, Number.NaN, -2, Number.POSITIVE_INFINITY, 0.5, -0]);
const BASE = serializeSafetensors(
  [
    { name: "a.weight", dtype: "F32", shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
    { name: "b.weight", dtype: "F16", shape: [3, 2], data: half },
    { name: "c.weight", dtype: "BF16", shape: [6], data: half },
    { name: "ids", dtype: "I64", shape: [2], data: new Uint8Array(16).fill(7) },
    { name: "empty", dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
  ],
  { format: "pt" },
);

const SERIALIZABLE = new Set(["F32", "F16", "BF16", "I32", "I64"]);

/** What a parsed file says: names, dtypes, shapes and bytes, for comparing two parses. */
const summary = (f: SafetensorsFile) =>
  [...f.tensors]
    .map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, bytes: [...t.bytes] }))
    .sort((a, b) => (a.name < b.name ? -1 : 1));

/** A parsed file's invariants, and its round trip through the writer. */
function checkValid(f: SafetensorsFile, size: number): void {
  for (const [name, t] of f.tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    assert.ok(Number.isSafeInteger(n), `${name}: element count ${n} is not exact`);
    assert.equal(t.bytes.byteLength, n * DTYPE_SIZE[t.dtype], `${name}: bytes and shape disagree`);
    assert.ok(t.bytes.byteLength <= size);
    // reading values must not throw either (the loaders call these on every weight)
    checkCase(() => describeNonFinite(t), { source: SRC, inputBytes: size });
    if (t.dtype === "F32" || t.dtype === "F16" || t.dtype === "BF16" || t.dtype === "F64") {
      const r = checkCase(() => tensorToFloat32(t), { source: SRC, inputBytes: size });
      if (r.ok) assert.equal(r.value.length, n);
    }
  }
  const kept = [...f.tensors].filter(([, t]) => SERIALIZABLE.has(t.dtype));
  const again = parseSafetensors(
    serializeSafetensors(
      kept.map(([name, t]) => ({ name, dtype: t.dtype as SerializableDType, shape: t.shape, data: t.bytes })),
      f.metadata,
    ),
    "again",
  );
  assert.deepEqual(summary(again), summary({ metadata: f.metadata, tensors: new Map(kept) }));
  assert.deepEqual(again.metadata, f.metadata);
}

function property(bytes: Uint8Array): void {
  count("safetensors");
  const r = checkCase(() => parseSafetensors(bytes, SRC), { source: SRC, inputBytes: bytes.length });
  if (r.ok) checkValid(r.value, bytes.length);
  else assert.equal(r.error.name, "SafetensorsError", r.error.message);
}

// ---------- generated headers ----------
const dtype = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...Object.keys(DTYPE_SIZE)) },
  { weight: 1, arbitrary: fc.constantFrom("F8_E4M3", "f32", "float32", "Q4_0", "", "I128") },
  { weight: 1, arbitrary: hostileJson },
);
const shape = fc.oneof(
  { weight: 4, arbitrary: fc.array(fc.nat(6), { maxLength: 4 }) },
  { weight: 1, arbitrary: fc.array(hostileInt, { maxLength: 5 }) },
  // products past 2^53 from factors that are each safe integers
  { weight: 1, arbitrary: fc.constant([2 ** 30, 2 ** 30, 2 ** 30]) },
  { weight: 1, arbitrary: fc.constant([2 ** 27 + 1, 2 ** 27 + 1]) },
  { weight: 1, arbitrary: fc.constant([0, 2 ** 53 - 1, 2 ** 53 - 1]) },
  { weight: 1, arbitrary: hostileJson },
);
const offsets = fc.oneof(
  { weight: 3, arbitrary: fc.tuple(fc.nat(200), fc.nat(200)) },
  { weight: 1, arbitrary: fc.tuple(hostileInt, hostileInt) },
  { weight: 1, arbitrary: fc.array(hostileInt, { maxLength: 3 }) },
  { weight: 1, arbitrary: hostileJson },
);
const entry = fc.record({ dtype, shape, data_offsets: offsets }, { requiredKeys: [] });
const metadata = fc.oneof(
  fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }),
  hostileJson,
);
const name = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.constantFrom("__proto__", "constructor", "", "a.weight"),
);
const header = fc.tuple(
  fc.dictionary(name, fc.oneof({ weight: 5, arbitrary: entry }, { weight: 1, arbitrary: hostileJson }), {
    maxKeys: 5,
  }),
  fc.option(metadata),
);

// the file from a header: a true or lying length, text damage (duplicate key, deep nesting, bad UTF-8)
const enc = new TextEncoder();
const generatedFile = fc
  .tuple(
    header,
    fc.nat(400),
    fc.constantFrom("plain", "duplicate", "deep", "badutf8"),
    fc.option(fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.constantFrom(2n ** 64n - 1n, 0n))),
  )
  .map(([[entries, meta], dataLength, damage, lie]) => {
    const obj: Record<string, unknown> = { ...entries };
    if (meta !== null) obj.__metadata__ = meta;
    let text = JSON.stringify(obj);
    if (damage === "duplicate" && text.length > 2) {
      const first = text.match(/^\{("(?:[^"\\]|\\.)*":)/);
      if (first) text = `{${first[1]}0,${text.slice(1)}`;
    } else if (damage === "deep") text = `{"deep":${deepText(50_000)},${text.slice(1)}`;
    const json = enc.encode(text);
    const body = damage === "badutf8" && json.length > 3 ? json.map((b, i) => (i === 2 ? 0xff : b)) : json;
    const out = new Uint8Array(8 + body.length + dataLength);
    new DataView(out.buffer).setBigUint64(0, lie ?? BigInt(body.length), true);
    out.set(body, 8);
    for (let i = 8 + body.length; i < out.length; i++) out[i] = (i * 37) & 0xff;
    return out;
  });

describe("fuzz: safetensors", () => {
  it("mutated valid files: a valid file or a SafetensorsError naming the file, never anything else", () => {
    fc.assert(fc.property(mutateBytes(BASE), property), params(1000));
  });

  it("generated headers (dtypes, shapes past 2^53, offsets, duplicates, nesting, UTF-8, lying lengths)", () => {
    fc.assert(fc.property(generatedFile, property), params(1000));
  });

  it("the file reader (io/node) agrees with the in-memory parser on mutated files", () => {
    const path = join(tmp, "model.safetensors");
    fc.assert(
      fc.property(fc.oneof(mutateBytes(BASE), generatedFile), (bytes) => {
        count("safetensors");
        writeFileSync(path, bytes);
        const file = checkCase(() => readSafetensorsFile(path), { source: path, inputBytes: bytes.length });
        let memory: SafetensorsFile | null = null;
        try {
          memory = parseSafetensors(bytes, path);
        } catch {
          memory = null;
        }
        assert.equal(file.ok, memory !== null, file.ok ? "file read, memory refused" : file.error.message);
        if (file.ok && memory) assert.deepEqual(summary(file.value), summary(memory));
      }),
      params(150),
    );
    report("safetensors");
  });
});
