/** A real pretrained model (../shared/data/stories260K-hf): golden greedy ids, prompt logits and losses. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { noGrad } from "../../src/autograd/index.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { loadTokenizer } from "../../src/io/node/tokenizer-file.js";
import { generate } from "../../src/models/generate.js";
import { languageModelLoss, nextTokenTargets } from "../../src/train/loss.js";
import { assertClose, SHARED_MISSING, sharedData } from "../helpers.js";

describe("stories260K", () => {
  const dir = sharedData("stories260K-hf");
  it("greedy decoding with the KV cache gives the golden ids token for token, and the prompt logits match", (t) => {
    if (!dir) return t.skip(SHARED_MISSING);
    const golden = JSON.parse(readFileSync(join(dir, "golden_greedy.json"), "utf8"));
    const { model } = loadModelFolder(dir);
    const ids = loadTokenizer(dir).encode(golden.prompt);
    assert.deepEqual(ids, golden.prompt_ids);
    const out = [...generate(model, ids, { maxTokens: golden.greedy_steps, temperature: 0 })];
    assert.deepEqual(out, golden.generated_ids);
    const logits = noGrad(() => model.forward(Int32Array.from(ids), [1, ids.length]));
    assertClose(logits.data, golden.prompt_logits.flat(), "f32", "prompt logits");
    for (const { ids: seq, mean_next_token_cross_entropy: want } of golden.losses) {
      const x = Int32Array.from(seq);
      const loss = noGrad(() => languageModelLoss(model, x, [1, x.length], nextTokenTargets(x, 1, x.length)));
      assertClose([loss.item()], [want], "f32", "loss");
    }
  });
});
