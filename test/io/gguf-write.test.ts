/** The GGUF v3 writer, read back by @huggingface/gguf (an independent reader) and by ours. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { gguf as parseGguf } from "@huggingface/gguf";
import { parseGGUFHeader } from "../../src/io/gguf.js";
import { GGMLType, GGUFValueType } from "../../src/io/gguf-types.js";
import { gguf, serializeGGUF } from "../../src/io/gguf-write.js";
import { f32ToF16 } from "../../src/tensor/dtype.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-gguf-write-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("GGUF writer", () => {
  // more than the writer's first 4 KiB buffer, so that it grows mid-string
  const words = Array.from({ length: 700 }, (_, i) => `tok${i}▁é`);
  const a = new Float32Array([1, 2, 3, 4, 5, 6]); // [2, 3] row-major: ne = [3, 2]
  const h = new Uint16Array([f32ToF16(0.5), f32ToF16(-2)]);
  const bytes = serializeGGUF(
    [
      ["general.architecture", gguf.string("llama")],
      ["x.u32", gguf.u32(4294967295)],
      ["x.i32", gguf.i32(-7)],
      ["x.f32", gguf.f32(0.25)],
      ["x.bool", gguf.bool(true)],
      ["x.u64", gguf.u64(2n ** 40n)],
      ["x.words", gguf.strings(words)],
      ["x.ints", gguf.array(GGUFValueType.INT32, [1, -2, 3])],
    ],
    [
      { name: "a", type: GGMLType.F32, ne: [3, 2], data: new Uint8Array(a.buffer) },
      { name: "h", type: GGMLType.F16, ne: [2], data: new Uint8Array(h.buffer) },
    ],
  );

  it("is read back by @huggingface/gguf: every value, type, tensor shape and offset", async () => {
    const file = join(tmp, "values.gguf");
    writeFileSync(file, bytes);
    const r = await parseGguf(file, { allowLocalFile: true, typedMetadata: true });
    const m = r.typedMetadata as unknown as Record<
      string,
      { value: unknown; type: number; subType?: number }
    >;
    assert.equal(m["general.architecture"]?.value, "llama");
    assert.deepEqual([m["x.u32"]?.value, m["x.u32"]?.type], [4294967295, GGUFValueType.UINT32]);
    assert.deepEqual([m["x.i32"]?.value, m["x.i32"]?.type], [-7, GGUFValueType.INT32]);
    assert.deepEqual([m["x.f32"]?.value, m["x.f32"]?.type], [0.25, GGUFValueType.FLOAT32]);
    assert.equal(m["x.bool"]?.value, true);
    assert.equal(BigInt(m["x.u64"]?.value as bigint), 2n ** 40n);
    assert.deepEqual(m["x.words"]?.value, words);
    assert.equal(m["x.words"]?.subType, GGUFValueType.STRING);
    assert.deepEqual(m["x.ints"]?.value, [1, -2, 3]);
    assert.deepEqual(
      [m["general.alignment"]?.value, m["general.alignment"]?.type],
      [32, GGUFValueType.UINT32],
    );
    assert.deepEqual(
      r.tensorInfos.map((t) => [t.name, t.shape.map(Number), t.dtype as number, Number(t.offset)]),
      [
        ["a", [3, 2], GGMLType.F32, 0],
        ["h", [2], GGMLType.F16, 32], // 24 bytes padded to the alignment
      ],
    );
    assert.equal(Number(r.tensorDataOffset) % 32, 0);
    const at = Number(r.tensorDataOffset);
    assert.deepEqual(new Float32Array(bytes.slice(at, at + 24).buffer), a);
    assert.deepEqual(new Uint16Array(bytes.slice(at + 32, at + 36).buffer), h);
    assert.equal(bytes.length, at + 64, "each tensor's data padded to the alignment");
  });

  it("is read back by our strict reader, which checks the table against the file", () => {
    const header = parseGGUFHeader(bytes, "values.gguf");
    assert.equal(header.version, 3);
    assert.deepEqual(header.metadata.get("x.words"), words);
    assert.deepEqual(
      header.tensors.map((t) => [t.name, t.dims, t.shape]),
      [
        ["a", [3, 2], [2, 3]],
        ["h", [2], [2]],
      ],
    );
  });

  it("lists every problem at once: duplicates, values of the wrong type, names, sizes", () => {
    assert.throws(
      () =>
        serializeGGUF(
          [
            ["k", gguf.u32(1)],
            ["k", gguf.u32(2)],
            ["neg", gguf.u32(-1)],
            ["general.alignment", gguf.u32(24)],
          ],
          [
            { name: "x".repeat(64), type: GGMLType.F32, ne: [1], data: new Uint8Array(4) },
            { name: "short", type: GGMLType.F32, ne: [2, 2], data: new Uint8Array(12) },
            { name: "q", type: GGMLType.Q8_0, ne: [16], data: new Uint8Array(34) },
          ],
        ),
      (e: Error) => {
        assert.match(e.message, /^cannot write GGUF \(6 problems\)/);
        assert.match(e.message, /metadata "k" is given twice/);
        assert.match(e.message, /metadata "neg" -1 is out of range for UINT32/);
        assert.match(e.message, /"general\.alignment" must be a u32 power of two/);
        assert.match(e.message, /its name is 64 bytes; ggml takes 1 to 63/);
        assert.match(e.message, /tensor "short": 12 bytes of data, but F32 \[2, 2\] takes 16/);
        assert.match(e.message, /tensor "q": its row length 16 is not a multiple of Q8_0's block of 32/);
        return true;
      },
    );
  });
});
