/** `lora eval`: mean next-token loss, perplexity and token count of a model (plus adapter) on data. */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { listCheckpoints } from "../io/node/checkpoint-folder.js";
import { readTextFile } from "../io/node/read-file.js";
import { evaluate } from "../train/evaluate.js";
import { ADAPTER_FLAG, adapterSpecs } from "./adapters.js";
import { type Command, num, required, str, UsageError, type Values } from "./command.js";
import {
  BASE_DTYPE_FLAG,
  baseDtypeOf,
  checkSeqLen,
  contextLength,
  loadModel,
  readRows,
  type Split,
  tokenizeRows,
} from "./load.js";
import { evalProgress } from "./progress.js";

/**
 * The sequence length of the `lora train` run an adapter folder comes from (a run folder, or one of
 * its checkpoints), or null for an adapter from elsewhere.
 */
function runSeqLen(adapterDir: string): number | null {
  const own = join(adapterDir, "trainer_state.json");
  const state = existsSync(own) ? own : listCheckpoints(adapterDir).at(-1)?.dir;
  if (!state) return null;
  try {
    const run = (
      JSON.parse(readTextFile(state === own ? own : join(state, "trainer_state.json"))) as {
        run?: { seq_len?: unknown; settings?: { "seq-len"?: unknown } };
      }
    ).run;
    const n = run?.seq_len ?? run?.settings?.["seq-len"];
    return typeof n === "number" && Number.isInteger(n) && n >= 2 ? n : null;
  } catch {
    return null;
  }
}

export const evalCommand: Command = {
  name: "eval",
  summary:
    "Evaluate a model (and optional adapter) on held-out data: mean negative log-likelihood per predicted token (nats), perplexity, token count.",
  usage:
    "lora eval --model DIR [--adapter PATH[:WEIGHT]]... --data FILE [--split valid] [--seq-len N] [--mask-prompt] [--base-dtype auto] [--json]",
  flags: {
    model: { type: "string", valueName: "DIR", description: "model folder or GGUF model file" },
    adapter: ADAPTER_FLAG,
    data: {
      type: "string",
      valueName: "PATH",
      description:
        ".txt (blank-line separated documents), .jsonl (text | prompt+completion | messages | input_ids), or a folder",
    },
    split: {
      type: "string",
      valueName: "NAME",
      description: "for a data folder: train, valid or test (default: test, else valid, else train)",
    },
    "seq-len": {
      type: "string",
      valueName: "N",
      description:
        "truncate rows to N tokens (default: the adapter's training --seq-len, else the model's context)",
    },
    "mask-prompt": { type: "boolean", description: "score only completions and assistant turns" },
    "base-dtype": BASE_DTYPE_FLAG,
    json: { type: "boolean", description: "print one JSON object {loss, perplexity, tokens}" },
  },
  examples: [
    "lora eval --model ../shared/data/stories260K-hf --data ../shared/data/tinyshakespeare/input.txt --json",
  ],
  run(v: Values) {
    const specs = adapterSpecs(v);
    const loaded = loadModel(required(v, "model", "eval"), specs, {
      baseDtype: baseDtypeOf(v),
    });
    const data = required(v, "data", "eval");
    const split = str(v, "split");
    if (split !== undefined && !["train", "valid", "test"].includes(split)) {
      throw new UsageError(`--split must be train, valid or test, got "${split}"`);
    }
    const rows = readRows(data, split as Split | undefined, ["test", "valid", "train"]);
    // an adapter from `lora train` is scored at the sequence length it was trained with
    const adapter = specs[0]?.path; // several: the first one's run
    const runLen = adapter ? runSeqLen(adapter) : null;
    const maxLen = num(v, "seq-len", runLen ?? contextLength(loaded.config), { int: true, min: 2 });
    checkSeqLen(maxLen, loaded.config, "--seq-len");
    if (runLen !== null && str(v, "seq-len") === undefined)
      console.error(`seq-len ${runLen}, as the adapter's training run used (--seq-len N to change)`);
    const {
      rows: tokenized,
      truncated,
      promptCut,
    } = tokenizeRows(rows, loaded.tokenizer, {
      maskPrompt: Boolean(v["mask-prompt"]),
      maxLen,
      source: data,
      vocabSize: loaded.model.vocabSize,
    });
    if (truncated + promptCut > 0)
      console.error(
        `warning: ${truncated + promptCut} row(s) longer than ${maxLen} tokens were truncated${promptCut ? ` (${promptCut} prompt/completion rows at the prompt's start)` : ""}`,
      );
    const r = evaluate(loaded.model, tokenized, evalProgress());
    if (!Number.isFinite(r.loss))
      throw new Error(
        `the loss is ${r.loss}: the model${adapter ? " or the adapter" : ""} gives non-finite logits on ${data}; check the weights (a diverged run's last good checkpoint evaluates finite)`,
      );
    if (v.json) console.log(JSON.stringify({ loss: r.loss, perplexity: r.perplexity, tokens: r.tokens }));
    else console.log(`loss ${r.loss.toFixed(6)}  perplexity ${r.perplexity.toFixed(4)}  tokens ${r.tokens}`);
  },
};
