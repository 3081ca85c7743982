/** `lora eval`: mean next-token loss, perplexity and token count of a model (plus adapter) on data. */
import { evaluate } from "../train/evaluate.js";
import { type Command, num, required, str, UsageError, type Values } from "./command.js";
import {
  BASE_DTYPE_FLAG,
  baseDtypeOf,
  contextLength,
  loadModel,
  readRows,
  type Split,
  tokenizeRows,
} from "./load.js";

export const evalCommand: Command = {
  name: "eval",
  summary:
    "Evaluate a model (and optional adapter) on held-out data: mean negative log-likelihood per predicted token (nats), perplexity, token count.",
  usage:
    "lora eval --model DIR [--adapter DIR] --data FILE [--split valid] [--seq-len N] [--mask-prompt] [--base-dtype auto] [--json]",
  flags: {
    model: { type: "string", valueName: "DIR", description: "model folder" },
    adapter: { type: "string", valueName: "DIR", description: "PEFT adapter folder to apply" },
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
      description: "truncate rows to N tokens (default: the model's context)",
    },
    "mask-prompt": { type: "boolean", description: "score only completions and assistant turns" },
    "base-dtype": BASE_DTYPE_FLAG,
    json: { type: "boolean", description: "print one JSON object {loss, perplexity, tokens}" },
  },
  examples: [
    "lora eval --model ../shared/data/stories260K-hf --data ../shared/data/tinyshakespeare/input.txt --json",
  ],
  run(v: Values) {
    const loaded = loadModel(required(v, "model", "eval"), str(v, "adapter"), {
      baseDtype: baseDtypeOf(v),
    });
    const data = required(v, "data", "eval");
    const split = str(v, "split");
    if (split !== undefined && !["train", "valid", "test"].includes(split)) {
      throw new UsageError(`--split must be train, valid or test, got "${split}"`);
    }
    const rows = readRows(data, split as Split | undefined, ["test", "valid", "train"]);
    const maxLen = num(v, "seq-len", contextLength(loaded.config), { int: true, min: 2 });
    const { rows: tokenized, truncated } = tokenizeRows(rows, loaded.tokenizer, {
      maskPrompt: Boolean(v["mask-prompt"]),
      maxLen,
      source: data,
    });
    if (truncated > 0)
      console.error(`warning: ${truncated} row(s) longer than ${maxLen} tokens were truncated`);
    const r = evaluate(loaded.model, tokenized);
    if (v.json) console.log(JSON.stringify({ loss: r.loss, perplexity: r.perplexity, tokens: r.tokens }));
    else console.log(`loss ${r.loss.toFixed(6)}  perplexity ${r.perplexity.toFixed(4)}  tokens ${r.tokens}`);
  },
};
