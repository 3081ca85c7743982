/** Token ids read from data files (issue 20, item 4): never wrapped, and checked against the model's vocabulary. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseDataset } from "../../src/io/dataset.js";
import { checkIds } from "../../src/train/data.js";

const SRC = "data/train.jsonl";

test("input_ids of 2^31 and above are refused, naming file and line, not wrapped modulo 2^32", () => {
  const cases: Array<[string, string]> = [
    ["4294967301", "4294967301"],
    ["1e300", "1e+300"],
    ["2147483648", "2147483648"],
  ];
  for (const [raw, shown] of cases) {
    assert.throws(
      () => parseDataset(`{"input_ids": [1, 2]}\n\n{"input_ids": [3, ${raw}]}\n`, SRC, "jsonl"),
      {
        message: `${SRC}:3: "input_ids"[1] is ${shown}, above the largest token id there can be (2147483647)`,
      },
      raw,
    );
  }
  assert.deepEqual(parseDataset('{"input_ids": [0, 2147483647]}', SRC, "jsonl"), [
    { input_ids: [0, 2147483647] },
  ]);
});

test("checkIds names each row holding an id outside the vocabulary, with the id and its position", () => {
  const rows = [{ ids: [1, 2, 3] }, { ids: [4, 512, 600] }, { ids: [0, 511] }];
  assert.doesNotThrow(() => checkIds(rows.slice(0, 1), 512, SRC));
  assert.throws(() => checkIds(rows, 512, SRC), {
    message: `${SRC}: row 2: id 512 at position 1: token ids outside the model's vocabulary (vocab_size 512, so ids 0..511); re-tokenize the data with this model's tokenizer, or use the model it was made for`,
  });
  const many = Array.from({ length: 12 }, (_, i) => ({ ids: Int32Array.from([i % 2 ? 1 : 700]) }));
  assert.throws(
    () => checkIds([...many, { ids: [-1] }], 512, SRC),
    (e: Error) => {
      const lines = e.message.split("\n");
      assert.equal(
        lines[0],
        `${SRC}: 7 rows hold token ids outside the model's vocabulary (vocab_size 512, so ids 0..511):`,
      );
      assert.deepEqual(lines.slice(1, 3), [
        "  - row 1: id 700 at position 0",
        "  - row 3: id 700 at position 0",
      ]);
      assert.equal(lines.length, 1 + 7 + 1);
      assert.equal(lines[7], "  - row 13: id -1 at position 0");
      return true;
    },
  );
});
