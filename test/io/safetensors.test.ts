/** Tests for safetensors parse/serialize/validation and the Node layer (shards, pickle, atomic write). */
import assert from "node:assert/strict";
import fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mock, test } from "node:test";
import {
  readModelWeights,
  readSafetensorsFile,
  writeFileAtomic,
} from "../../src/io/node/safetensors-file.js";
import {
  parseSafetensors,
  SafetensorsError,
  serializeSafetensors,
  tensorToFloat32,
} from "../../src/io/safetensors.js";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../../src/tensor/dtype.js";
import { SHARED_MISSING, sharedData } from "../helpers.js";

const utf8 = new TextDecoder();
const headerText = (file: Uint8Array) => {
  const n = new DataView(file.buffer, file.byteOffset).getUint32(0, true);
  return utf8.decode(file.subarray(8, 8 + n));
};
const iota = (n: number, scale = 1) => Float32Array.from({ length: n }, (_, i) => (i - n / 3) * scale);

/** A file with a hand-written header (object or raw text) and `dataLength` zero bytes of data. */
function rawFile(header: unknown, dataLength: number, headerLength?: number): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataLength);
  new DataView(out.buffer).setUint32(0, headerLength ?? json.length, true);
  out.set(json, 8);
  return out;
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof SafetensorsError, `expected SafetensorsError, got ${err}`);
    return err.problems;
  }
  return assert.fail("expected a SafetensorsError");
}

test("round trip F32/F16/BF16 with odd, empty and scalar shapes", () => {
  const shapes = [[3, 5, 7], [0, 4], [], [1], [2, 1, 3]];
  const tensors = (["F32", "F16", "BF16"] as const).flatMap((dtype) =>
    shapes.map((shape, k) => ({
      name: `${dtype.toLowerCase()}.${k}`,
      dtype,
      shape,
      data: iota(
        shape.reduce((a, b) => a * b, 1),
        0.37,
      ),
    })),
  );
  const file = serializeSafetensors(tensors, { format: "pt", note: "ü" });
  assert.equal((8 + new DataView(file.buffer).getUint32(0, true)) % 8, 0);
  const parsed = parseSafetensors(file, "mem");
  assert.deepEqual(parsed.metadata, { format: "pt", note: "ü" });
  assert.equal(parsed.tensors.size, tensors.length);
  const round = {
    F32: (x: number) => Math.fround(x),
    F16: (x: number) => f16ToF32(f32ToF16(x)),
    BF16: (x: number) => bf16ToF32(f32ToBf16(x)),
  };
  for (const t of tensors) {
    const got = parsed.tensors.get(t.name)!;
    assert.equal(got.dtype, t.dtype);
    assert.deepEqual(got.shape, t.shape);
    assert.equal(got.bytes.buffer, file.buffer, "tensor bytes are a view into the file");
    assert.deepEqual([...tensorToFloat32(got)], [...t.data].map(round[t.dtype]), t.name);
  }
});

test("serialize matches Python safetensors 0.8.0 byte for byte", () => {
  // safetensors.numpy.save({"w": f32 [[1.5, -2, 3.25]], "h": f16 [0.1, 65504, -0], "i": i64 [-1, 2**40],
  //   "s": i32 scalar 7, "e": f32 zeros (0, 3)}, metadata={"format": "pt"}), base64-encoded.
  const python = Buffer.from(
    "OAEAAAAAAAB7Il9fbWV0YWRhdGFfXyI6eyJmb3JtYXQiOiJwdCJ9LCJpIjp7ImR0eXBlIjoiSTY0Iiwic2hhcGUiOlsyXSwiZGF0YV9vZmZzZXRzIjpbMCwxNl19LCJlIjp7ImR0eXBlIjoiRjMyIiwic2hhcGUiOlswLDNdLCJkYXRhX29mZnNldHMiOlsxNiwxNl19LCJ3Ijp7ImR0eXBlIjoiRjMyIiwic2hhcGUiOlsxLDNdLCJkYXRhX29mZnNldHMiOlsxNiwyOF19LCJzIjp7ImR0eXBlIjoiSTMyIiwic2hhcGUiOltdLCJkYXRhX29mZnNldHMiOlsyOCwzMl19LCJoIjp7ImR0eXBlIjoiRjE2Iiwic2hhcGUiOlszXSwiZGF0YV9vZmZzZXRzIjpbMzIsMzhdfX0gICD//////////wAAAAAAAQAAAADAPwAAAMAAAFBABwAAAGYu/3sAgA==",
    "base64",
  );
  const ours = serializeSafetensors(
    [
      { name: "w", dtype: "F32", shape: [1, 3], data: new Float32Array([1.5, -2, 3.25]) },
      { name: "h", dtype: "F16", shape: [3], data: new Float32Array([0.1, 65504, -0]) },
      {
        name: "i",
        dtype: "I64",
        shape: [2],
        data: new Uint8Array(new BigInt64Array([-1n, 2n ** 40n]).buffer),
      },
      { name: "s", dtype: "I32", shape: [], data: new Uint8Array(new Int32Array([7]).buffer) },
      { name: "e", dtype: "F32", shape: [0, 3], data: new Float32Array(0) },
    ],
    { format: "pt" },
  );
  assert.ok(headerText(ours).endsWith("}}   "), "header is space-padded");
  assert.deepEqual([...ours], [...python]);
});

test("serialize rejects inconsistent input, listing every problem", () => {
  const problems = problemsOf(() =>
    serializeSafetensors([
      { name: "a", dtype: "F32", shape: [2, 2], data: new Float32Array(3) },
      { name: "a", dtype: "I32", shape: [2], data: new Float32Array(2) },
      { name: "b", dtype: "I64", shape: [1], data: new Uint8Array(4) },
    ]),
  );
  assert.deepEqual(problems, [
    'tensor "a": 3 values but shape [2, 2] needs 4',
    'tensor "a": name appears more than once',
    'tensor "a": Float32Array data cannot be encoded as I32; pass raw bytes as a Uint8Array',
    'tensor "b": 4 bytes but I64 [1] needs 8',
  ]);
});

test("the example message: size mismatch", () => {
  const file = rawFile({ x: { dtype: "F32", shape: [2, 2], data_offsets: [0, 12] } }, 12);
  assert.throws(() => parseSafetensors(file, "model.safetensors"), {
    name: "SafetensorsError",
    message:
      'model.safetensors: invalid safetensors file:\n  - tensor "x": data_offsets [0, 12] hold 12 bytes but F32 [2, 2] needs 16',
  });
});

test("each validation failure names the problem and what to do", () => {
  const ok = { dtype: "F32", shape: [2], data_offsets: [0, 8] };
  const cases: Array<[string, Uint8Array, RegExp]> = [
    [
      "truncated",
      new Uint8Array(5),
      /file is 5 bytes, shorter than the 8-byte header length; the file may be truncated/,
    ],
    [
      "header past end",
      rawFile({ a: ok }, 8, 1000),
      /header length 1000 runs past the end of the \d+-byte file; .*re-download/,
    ],
    ["bad JSON", rawFile('{"a": {', 0), /header is not valid UTF-8 JSON/],
    ["not an object", rawFile("[1, 2]", 0), /header is not a JSON object/],
    ["bad UTF-8", rawFile('{"\xff":{}}', 0).fill(0xff, 10, 11), /not valid UTF-8 JSON/],
    [
      "offsets out of range",
      rawFile({ a: { ...ok, data_offsets: [4, 12] } }, 8),
      /tensor "a": data_offsets \[4, 12\] are outside the 8-byte data section; the file may be truncated/,
    ],
    [
      "begin after end",
      rawFile({ a: { ...ok, data_offsets: [8, 0] } }, 8),
      /tensor "a": data_offsets \[8, 0\] are outside/,
    ],
    [
      "overlap",
      rawFile({ a: ok, b: { ...ok, data_offsets: [4, 12] } }, 12),
      /tensors "a" \[0, 8\] and "b" \[4, 12\] overlap/,
    ],
    [
      "unknown dtype",
      rawFile({ a: { ...ok, dtype: "U16" } }, 8),
      /tensor "a": unknown dtype "U16" \(supported: F64, /,
    ],
    ["bad shape", rawFile({ a: { ...ok, shape: [2, -1] } }, 8), /tensor "a": shape \[2,-1\] is not an array/],
    ["bad offsets", rawFile({ a: { ...ok, data_offsets: [0] } }, 8), /data_offsets \[0\] is not a pair/],
    ["bad metadata", rawFile({ __metadata__: { n: 3 }, a: ok }, 8), /__metadata__ "n" is 3, not a string/],
  ];
  for (const [label, file, pattern] of cases) {
    assert.throws(
      () => parseSafetensors(file, "f.safetensors"),
      (err: unknown) => {
        assert.ok(err instanceof SafetensorsError, label);
        assert.match(err.message, /^f\.safetensors: invalid safetensors file:\n {2}- /, label);
        assert.match(err.message, pattern, label);
        return true;
      },
    );
  }
});

test("every problem in a header is listed, one per line", () => {
  const file = rawFile(
    {
      __metadata__: { format: "pt", bad: 1 },
      a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
      b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
      c: { dtype: "Q4", shape: [1], data_offsets: [12, 13] },
      d: { dtype: "F16", shape: [3], data_offsets: [12, 14] },
      e: { dtype: "F32", shape: [1], data_offsets: [14, 99] },
    },
    16,
  );
  const problems = problemsOf(() => parseSafetensors(file, "multi"));
  assert.equal(problems.length, 5, problems.join("\n"));
  const message = (() => {
    try {
      parseSafetensors(file, "multi");
    } catch (err) {
      return (err as Error).message;
    }
  })()!;
  assert.equal(message.split("\n").length, 6);
  for (const needle of [
    '"bad"',
    '"c": unknown dtype',
    '"d": data_offsets [12, 14] hold 2',
    '"e"',
    '"a" [0, 8] and "b"',
  ]) {
    assert.ok(message.includes(needle), `missing ${needle} in\n${message}`);
  }
});

test("empty tensors at a shared boundary are not overlaps", () => {
  const file = rawFile(
    {
      b: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
      e: { dtype: "F32", shape: [0], data_offsets: [4, 4] },
      a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
    },
    8,
  );
  assert.equal(parseSafetensors(file, "x").tensors.size, 3);
});

test("real stories260K-hf/model.safetensors", (t) => {
  const dir = sharedData("stories260K-hf");
  if (!dir) return t.skip(SHARED_MISSING);
  const file = readSafetensorsFile(join(dir, "model.safetensors"));
  assert.deepEqual(file.metadata, { format: "pt" });
  assert.equal(file.tensors.size, 48);
  for (const entry of file.tensors.values()) assert.equal(entry.dtype, "F32");
  const embed = file.tensors.get("model.embed_tokens.weight")!;
  assert.deepEqual(embed.shape, [512, 64]);
  const values = tensorToFloat32(embed);
  assert.equal(values.length, 512 * 64);
  assert.equal(values.buffer, embed.bytes.buffer, "aligned F32 is decoded without a copy");
  assert.ok(values.every(Number.isFinite));
  assert.deepEqual([...tensorToFloat32(file.tensors.get("lm_head.weight")!)], [...values]);

  const weights = readModelWeights(dir);
  assert.equal(weights.tensors.size, 48);
  assert.equal(weights.tensors.get("lm_head.weight")!.file, join(dir, "model.safetensors"));
});

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(join(tmpdir(), "lora-ts-safetensors-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const f32 = (name: string, values: number[]) => ({
  name,
  dtype: "F32" as const,
  shape: [values.length],
  data: new Float32Array(values),
});

test("sharded model folder: reads every shard via the index", (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(
    join(dir, "model-00001-of-00002.safetensors"),
    serializeSafetensors([f32("a", [1, 2]), f32("b", [3])], { format: "pt" }),
  );
  fs.writeFileSync(
    join(dir, "model-00002-of-00002.safetensors"),
    serializeSafetensors([f32("c", [4, 5, 6])], { format: "pt" }),
  );
  const weightMap = {
    a: "model-00001-of-00002.safetensors",
    b: "model-00001-of-00002.safetensors",
    c: "model-00002-of-00002.safetensors",
  };
  fs.writeFileSync(
    join(dir, "model.safetensors.index.json"),
    JSON.stringify({ metadata: { total_size: 24 }, weight_map: weightMap }),
  );
  const weights = readModelWeights(dir);
  assert.deepEqual([...weights.tensors.keys()].sort(), ["a", "b", "c"]);
  assert.deepEqual([...tensorToFloat32(weights.tensors.get("c")!)], [4, 5, 6]);
  assert.equal(weights.tensors.get("c")!.file, join(dir, "model-00002-of-00002.safetensors"));
  assert.deepEqual(weights.metadata, { format: "pt" });
  assert.deepEqual(weights.indexMetadata, { total_size: 24 });
});

test("sharded model folder: every inconsistency is reported at once", (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(join(dir, "s1.safetensors"), serializeSafetensors([f32("a", [1]), f32("dup", [2])]));
  fs.writeFileSync(join(dir, "s2.safetensors"), serializeSafetensors([f32("dup", [3])]));
  const weightMap = {
    a: "s1.safetensors",
    dup: "s2.safetensors",
    ghost: "s2.safetensors",
    lost: "s3.safetensors",
    evil: "../x",
  };
  fs.writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: weightMap }));
  const problems = problemsOf(() => readModelWeights(dir));
  assert.equal(problems.length, 4, problems.join("\n"));
  const text = problems.join("\n");
  assert.match(text, /weight_map "evil": "\.\.\/x" is not a file name in this folder/);
  assert.match(text, /"ghost" is listed under s2\.safetensors in weight_map but s2\.safetensors lacks it/);
  assert.match(text, /"dup" appears in two shards: .*s1\.safetensors and .*s2\.safetensors/);
  assert.match(text, /s3\.safetensors: cannot read: file not found/);
});

test("a folder holding only pytorch_model.bin is refused with a conversion hint", (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(join(dir, "pytorch_model.bin"), "not read");
  fs.writeFileSync(join(dir, "config.json"), "{}");
  assert.throws(
    () => readModelWeights(dir),
    /pickle checkpoints are not read .*Convert to safetensors with Python/,
  );
  assert.throws(() => readModelWeights(join(dir, "nope")), /nope: folder not found/);
  fs.rmSync(join(dir, "pytorch_model.bin"));
  assert.throws(
    () => readModelWeights(dir),
    /no model\.safetensors or model\.safetensors\.index\.json \(it holds config\.json\)/,
  );
});

test("readSafetensorsFile names the path when the file is missing or damaged", (t) => {
  const dir = tempDir(t);
  const missing = join(dir, "missing.safetensors");
  assert.throws(() => readSafetensorsFile(missing), {
    message: `${missing}: cannot read: file not found; check the path and that the download finished`,
  });
  assert.throws(
    () => readSafetensorsFile(dir),
    /cannot read: it is a folder, not a regular file; pass the file itself/,
  );
  const cut = join(dir, "cut.safetensors");
  fs.writeFileSync(cut, serializeSafetensors([f32("a", [1, 2, 3])]).subarray(0, 40));
  assert.throws(
    () => readSafetensorsFile(cut),
    (err: unknown) => err instanceof SafetensorsError && err.message.startsWith(`${cut}: invalid`),
  );
});

const leftovers = (dir: string) => fs.readdirSync(dir).filter((n) => n.includes(".tmp-"));

test("writeFileAtomic creates and replaces files, leaving no temp files", (t) => {
  const dir = tempDir(t);
  const path = join(dir, "out.safetensors");
  writeFileAtomic(path, "first");
  assert.equal(fs.readFileSync(path, "utf8"), "first");
  const bytes = serializeSafetensors([f32("w", [1, 2])]);
  writeFileAtomic(path, bytes);
  assert.deepEqual([...fs.readFileSync(path)], [...bytes]);
  assert.deepEqual(fs.readdirSync(dir), ["out.safetensors"]);
  assert.throws(
    () => writeFileAtomic(join(dir, "no/such/dir.txt"), "x"),
    /no\/such\/dir\.txt: cannot write: folder .* does not exist/,
  );
  assert.deepEqual(leftovers(dir), []);
});

test("writeFileAtomic on a full disk says so, removes the temp file and keeps the old content", (t) => {
  const dir = tempDir(t);
  const path = join(dir, "adapter.safetensors");
  writeFileAtomic(path, "old");
  const full = mock.method(fs, "writeSync", () => {
    throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
  });
  t.after(() => full.mock.restore());
  assert.throws(
    () => writeFileAtomic(path, "new content"),
    (err: unknown) => {
      assert.match((err as Error).message, /adapter\.safetensors: cannot write: the disk is full/);
      return true;
    },
  );
  full.mock.restore();
  assert.equal(fs.readFileSync(path, "utf8"), "old");
  assert.deepEqual(leftovers(dir), []);
});
