/** The strict GGUF reader: a file gguf-py wrote, stories260K.gguf, and hand-built broken and hostile files. */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { GGUFError, type GGUFValue, isGGUF, parseGGUFHeader } from "../../src/io/gguf.js";
import { GGMLType, GGUFValueType } from "../../src/io/gguf-types.js";
import { isGGUFFile, readGGUFHeader, readGGUFTensorData } from "../../src/io/node/gguf-file.js";
import { fixturesDir, SHARED_MISSING, sharedData } from "../helpers.js";
import { buildGGUF, f32Bytes, type GGUFSpec } from "./gguf-builder.js";

const VALUES = resolve(fixturesDir, "gguf/values.gguf");
const expected = JSON.parse(readFileSync(resolve(fixturesDir, "gguf/values.json"), "utf8"));

const fromJson = (v: unknown): GGUFValue =>
  Array.isArray(v)
    ? v.map(fromJson)
    : typeof v === "object" && v !== null
      ? BigInt((v as { bigint: string }).bigint)
      : (v as GGUFValue);

test("a file gguf-py's GGUFWriter wrote reads back with every value, type and tensor GGUFReader sees", () => {
  const h = readGGUFHeader(VALUES);
  assert.equal(h.version, 3);
  assert.equal(h.alignment, 64);
  assert.deepEqual([...h.metadata.keys()], Object.keys(expected.metadata));
  for (const [key, { type, value }] of Object.entries(expected.metadata) as [
    string,
    { type: number; value: unknown },
  ][]) {
    assert.equal(h.types.get(key)!.type, type, key);
    assert.deepEqual(h.metadata.get(key), fromJson(value), key);
  }
  assert.equal(h.types.get("t.arr_nested")!.arrayType, GGUFValueType.ARRAY);
  assert.equal(h.types.get("t.arr_nested")!.inner!.arrayType, GGUFValueType.INT32);
  assert.equal(h.types.get("t.arr_str")!.arrayType, GGUFValueType.STRING);
  assert.deepEqual(
    h.tensors.map((t) => ({ name: t.name, ne: t.dims, type: t.type, offset: t.offset, bytes: t.bytes })),
    expected.tensors,
  );
  assert.deepEqual(h.tensors[0]!.shape, [2, 3]);
  const file = readFileSync(VALUES);
  const data = readGGUFTensorData(h);
  for (const t of h.tensors)
    assert.deepEqual(data.get(t.name), new Uint8Array(file.subarray(t.offset, t.offset + t.bytes)));
  assert.deepEqual([...readGGUFTensorData(h, ["b.f16"]).keys()], ["b.f16"]);
  assert.throws(
    () => readGGUFTensorData(h, ["nope"]),
    /values\.gguf: invalid GGUF file: it has no tensor "nope"/,
  );
  assert.ok(isGGUFFile(VALUES));
  assert.ok(!isGGUFFile(resolve(fixturesDir, "gguf/values.json")));
  assert.ok(!isGGUFFile(fixturesDir));
  assert.ok(isGGUF(file) && !isGGUF(file.subarray(1)));
});

test("stories260K.gguf: its header and tensor table", {
  skip: sharedData("stories260K") ? false : SHARED_MISSING,
}, () => {
  const h = readGGUFHeader(join(sharedData("stories260K")!, "stories260K.gguf"));
  assert.equal(h.metadata.get("general.architecture"), "llama");
  assert.equal(h.metadata.get("llama.block_count"), 5);
  assert.equal((h.metadata.get("tokenizer.ggml.tokens") as string[]).length, 512);
  assert.equal(h.tensors.length, 48);
  const embd = h.tensors.find((t) => t.name === "token_embd.weight")!;
  assert.deepEqual(embd.dims, [64, 512]);
  assert.equal(embd.type, GGMLType.F32);
  assert.equal(embd.bytes, 64 * 512 * 4);
  const last = h.tensors.at(-1)!;
  assert.equal(last.offset + last.bytes, h.size);
});

// --- broken and hostile files: one line naming the file and the problem ---

const SRC = "bad.gguf";
const okTensor = { name: "w", dims: [4, 2], type: GGMLType.F32, data: f32Bytes([1, 2, 3, 4, 5, 6, 7, 8]) };

function refuses(spec: GGUFSpec | Uint8Array, pattern: RegExp) {
  const bytes = spec instanceof Uint8Array ? spec : buildGGUF(spec);
  assert.throws(
    () => parseGGUFHeader(bytes, SRC),
    (err: unknown) => {
      assert.ok(err instanceof GGUFError, String(err));
      assert.match(err.message, /^bad\.gguf: invalid GGUF file: /);
      assert.ok(!err.message.includes("\n"), `not one line: ${err.message}`);
      assert.match(err.message, pattern);
      return true;
    },
  );
}

test("a hand-built file reads: metadata, an empty array, tensors packed at the alignment", () => {
  const bytes = buildGGUF({
    kvs: [
      { key: "general.architecture", type: GGUFValueType.STRING, value: "llama" },
      { key: "e", type: GGUFValueType.ARRAY, arrayType: GGUFValueType.INT32, value: [] },
    ],
    tensors: [okTensor, { name: "b", dims: [3], type: GGMLType.F32, data: f32Bytes([9, 8, 7]) }],
  });
  const h = parseGGUFHeader(bytes, SRC);
  assert.deepEqual(h.metadata.get("e"), []);
  assert.equal(h.dataOffset % 32, 0);
  assert.deepEqual(
    h.tensors.map((t) => [t.name, t.offset - h.dataOffset, t.bytes, t.elements]),
    [
      ["w", 0, 32, 8],
      ["b", 32, 12, 3],
    ],
  );
  assert.equal(parseGGUFHeader(buildGGUF({ version: 2, tensors: [okTensor] }), SRC).version, 2);
});

test("bad magic and versions", () => {
  refuses(new TextEncoder().encode("PK\x03\x04 not a gguf"), /bad magic 0x04034b50.*not a GGUF file/);
  refuses(new TextEncoder().encode("GGML0000"), /bad magic "GGML"/);
  refuses(new Uint8Array(2), /2 bytes long, too short/);
  refuses({ version: 1 }, /version 1 is not supported/);
  refuses({ version: 4 }, /unknown version 4/);
  refuses({ version: 0x03000000 }, /big-endian/);
});

test("truncated header and truncated data", () => {
  const whole = buildGGUF({
    kvs: [{ key: "general.name", type: GGUFValueType.STRING, value: "tiny" }],
    tensors: [okTensor],
  });
  for (const cut of [10, 30, 40, 60])
    refuses(whole.subarray(0, cut), /the file ends inside|left in the file|data section would start/);
  refuses(
    whole.subarray(0, whole.length - 1),
    /tensor "w" \(32 bytes at data offset 0\) ends past the end of the file.*truncated/,
  );
});

test("tensor offsets past the end, overlapping or misaligned", () => {
  refuses({ tensors: [{ ...okTensor, offset: 2n ** 63n }] }, /tensor "w".*ends past the end of the file/);
  refuses({ tensors: [{ ...okTensor, offset: 2n ** 64n - 32n }] }, /ends past the end of the file/);
  refuses(
    { tensors: [okTensor, { ...okTensor, name: "v", offset: 0 }] },
    /tensors "w" and "v" overlap|tensors "v" and "w" overlap/,
  );
  refuses(
    { tensors: [{ ...okTensor, offset: 4 }] },
    /tensor "w" has offset 4, not a multiple of the alignment 32/,
  );
});

test("unknown and unsized tensor types, by number and by name", () => {
  refuses({ tensors: [{ ...okTensor, type: 99 }] }, /tensor "w" has unknown tensor type 99/);
  refuses({ tensors: [{ ...okTensor, type: 4 }] }, /unknown tensor type 4/);
  refuses(
    { tensors: [{ ...okTensor, type: GGMLType.IQ2_XXS, dims: [256] }] },
    /tensor type IQ2_XXS, which this reader cannot size/,
  );
});

test("huge n_dims, counts, shapes and strings cost nothing beyond the file", () => {
  refuses(
    { tensors: [{ ...okTensor, dims: [1, 1, 1, 1, 1] }] },
    /tensor "w" has 5 dimensions \(ggml allows at most 4\)/,
  );
  refuses({ tensors: [{ ...okTensor, nDims: 0xffffffff }] }, /has 4294967295 dimensions/);
  refuses(
    { tensorCount: 2n ** 64n - 1n },
    /the tensor count is 18446744073709551615, but only \d+ bytes are left/,
  );
  refuses({ kvCount: 2n ** 64n - 1n }, /the metadata count is 18446744073709551615/);
  const arr = buildGGUF({
    kvs: [{ key: "a", type: GGUFValueType.ARRAY, arrayType: GGUFValueType.UINT64, value: [1n] }],
  });
  // overwrite the array count (after magic, version, counts, key length 8 + "a", type 4, element type 4)
  new DataView(arr.buffer).setBigUint64(4 + 4 + 8 + 8 + 8 + 1 + 4 + 4, 2n ** 64n - 1n, true);
  refuses(arr, /the element count of metadata "a" is 18446744073709551615, but only 8 bytes are left/);
  refuses({ tensors: [{ ...okTensor, dims: [2n ** 60n] }] }, /ne\[0\] = 1152921504606846976/);
  refuses({ tensors: [{ ...okTensor, dims: [2 ** 30, 2 ** 30, 2 ** 30] }] }, /element count overflows/);
  refuses({ tensors: [{ ...okTensor, dims: [2 ** 26, 2 ** 26] }] }, /ends past the end of the file/);
  const str = buildGGUF({ kvs: [{ key: "k", type: GGUFValueType.STRING, value: "v" }] });
  new DataView(str.buffer).setBigUint64(24, 2n ** 64n - 1n, true);
  refuses(str, /metadata key 0 is 18446744073709551615 bytes long, longer than the \d+ bytes left/);
  const val = buildGGUF({ kvs: [{ key: "k", type: GGUFValueType.STRING, value: "v" }] });
  new DataView(val.buffer).setBigUint64(24 + 8 + 1 + 4, 1000n, true);
  refuses(val, /metadata "k" is 1000 bytes long, longer than the 1 bytes left/);
});

test("rows that are not whole blocks", () => {
  refuses(
    { tensors: [{ ...okTensor, type: GGMLType.Q8_0, dims: [33, 2], bytes: 200 }] },
    /rows of 33 elements, not a multiple of the Q8_0 block size 32/,
  );
  refuses(
    { tensors: [{ ...okTensor, type: GGMLType.Q4_K, dims: [128], bytes: 200 }] },
    /rows of 128 elements, not a multiple of the Q4_K block size 256/,
  );
});

test("duplicate keys and tensor names, bad values and alignment", () => {
  const kv = { key: "a", type: GGUFValueType.UINT8, value: 1 };
  refuses({ kvs: [kv, kv] }, /metadata key "a" appears twice/);
  refuses({ tensors: [okTensor, { ...okTensor }] }, /tensor name "w" appears twice/);
  refuses({ kvs: [{ ...kv, type: GGUFValueType.BOOL, value: 2 }] }, /metadata "a" is a bool holding 2/);
  refuses({ kvs: [{ ...kv, type: 13 as GGUFValueType }] }, /metadata "a" has unknown value type 13/);
  refuses(
    { kvs: [{ ...kv, type: GGUFValueType.ARRAY, arrayType: 42 as GGUFValueType, value: [] }] },
    /array of unknown value type 42/,
  );
  refuses({ kvs: [{ ...kv, keyBytes: Uint8Array.from([0xff, 0xfe]) }] }, /metadata key 0 is not valid UTF-8/);
  const align = (type: GGUFValueType, value: unknown) => ({
    kvs: [{ key: "general.alignment", type, value }],
  });
  refuses(align(GGUFValueType.UINT32, 0), /general.alignment is 0, not a power of two/);
  refuses(align(GGUFValueType.UINT32, 48), /general.alignment is 48, not a power of two/);
  refuses(align(GGUFValueType.UINT64, 32n), /general.alignment must be a u32/);
  // nine levels of arrays of arrays: built by hand, since the builder needs one element type per level
  const bytes = buildGGUF({ kvs: [{ key: "d", type: GGUFValueType.UINT8, value: 0 }] });
  const nested: number[] = [];
  const u32 = (v: number) => nested.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24);
  const u64 = (v: number) => {
    u32(v);
    u32(0);
  };
  for (let i = 0; i < 9; i++) {
    u32(GGUFValueType.ARRAY);
    u64(1);
  }
  u32(GGUFValueType.UINT8);
  u64(0);
  const head = bytes.subarray(0, bytes.length - 5); // drop the u8 value's type and byte
  const file = new Uint8Array([...head, ...Uint8Array.from([GGUFValueType.ARRAY, 0, 0, 0]), ...nested]);
  refuses(file, /nests arrays more than 8 deep/);
});

test("the Node reader names the path and refuses a file that changed after its header was read", () => {
  const dir = mkdtempSync(join(tmpdir(), "gguf-"));
  try {
    const path = join(dir, "m.gguf");
    writeFileSync(path, buildGGUF({ tensors: [okTensor] }));
    const h = readGGUFHeader(path);
    assert.deepEqual(
      [...new Float32Array(readGGUFTensorData(h).get("w")!.slice().buffer)],
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    writeFileSync(path, buildGGUF({ tensors: [okTensor] }).subarray(0, 70));
    assert.throws(() => readGGUFTensorData(h), /m\.gguf: invalid GGUF file: the file changed/);
    assert.throws(
      () => readGGUFHeader(path),
      new RegExp(`${path.replace(/[.]/g, "\\.")}: invalid GGUF file: .*truncated`),
    );
    assert.throws(() => readGGUFHeader(join(dir, "none.gguf")), /none\.gguf: cannot read: file not found/);
  } finally {
    rmSync(dir, { recursive: true });
  }
});
