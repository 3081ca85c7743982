/** Token ids read from data files (issue 20, item 4): never wrapped modulo 2^32. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseDataset } from "../../src/io/dataset.js";

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
