/** `lora generate`: stream a continuation of a prompt, optionally through a PEFT adapter. */
import { createStreamDecoder } from "../io/tokenizer.js";
import { generate } from "../models/generate.js";
import { ADAPTER_FLAG, adapterSpecs } from "./adapters.js";
import { type Command, num, required, UsageError, type Values } from "./command.js";
import { BASE_DTYPE_FLAG, baseDtypeOf, contextLength, loadModel } from "./load.js";

export const generateCommand: Command = {
  name: "generate",
  summary:
    "Generate text from a Hugging Face model folder, with an optional LoRA adapter. Streams to stdout.",
  usage:
    "lora generate --model DIR [--adapter PATH[:WEIGHT]]... --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--chat] [--base-dtype auto]",
  flags: {
    model: {
      type: "string",
      valueName: "DIR",
      description: "model folder (config.json, model.safetensors, tokenizer.json), or a GGUF model file",
    },
    adapter: ADAPTER_FLAG,
    prompt: { type: "string", valueName: "TEXT", description: "the prompt" },
    "max-tokens": { type: "string", valueName: "N", description: "tokens to generate (default 100)" },
    temperature: {
      type: "string",
      valueName: "T",
      description: "sampling temperature; 0 = greedy (default 0)",
    },
    "top-k": {
      type: "string",
      valueName: "K",
      description: "sample from the K most likely tokens (default 0 = off)",
    },
    "top-p": {
      type: "string",
      valueName: "P",
      description: "nucleus sampling mass, in (0, 1] (default 1 = off)",
    },
    seed: { type: "string", valueName: "S", description: "random seed for sampling (default 0)" },
    chat: {
      type: "boolean",
      description: "wrap the prompt as a user message with the model's chat template",
    },
    "no-stop": { type: "boolean", description: "do not stop at the end-of-sequence token" },
    "base-dtype": BASE_DTYPE_FLAG,
  },
  examples: [
    'lora generate --model ../shared/data/stories260K-hf --prompt "Once upon a time" --max-tokens 40 --temperature 0',
  ],
  run(v: Values) {
    const { model, tokenizer, config } = loadModel(required(v, "model", "generate"), adapterSpecs(v), {
      needTokenizer: true,
      baseDtype: baseDtypeOf(v),
    });
    const tok = tokenizer!;
    const prompt = required(v, "prompt", "generate");
    const ids = v.chat
      ? tok.encode(
          tok.applyChatTemplate([{ role: "user", content: prompt }], { addGenerationPrompt: true }),
          {
            addSpecialTokens: false,
          },
        )
      : tok.encode(prompt);
    const stream = createStreamDecoder(tok, { context: ids });
    // generation stops at the model's context, as transformers' max_length does (no position past it
    // was trained; GPT-2 has none)
    const room = contextLength(config) - ids.length;
    if (room < 1)
      throw new UsageError(
        `the prompt is ${ids.length} tokens, and the model's context is ${contextLength(config)}: shorten the prompt`,
      );
    const asked = num(v, "max-tokens", 100, { int: true, min: 0 });
    if (asked > room)
      console.error(
        `warning: --max-tokens ${asked} would pass the model's context of ${contextLength(config)} tokens; generating at most ${room}`,
      );
    const opts = {
      maxTokens: Math.min(asked, room),
      temperature: num(v, "temperature", 0, { min: 0 }),
      topK: num(v, "top-k", 0, { int: true, min: 0 }),
      topP: num(v, "top-p", 1, { min: 0, exclusiveMin: true, max: 1 }),
      seed: num(v, "seed", 0, { int: true }),
      stopIds: v["no-stop"] ? [] : tok.eosIds,
    };
    process.stdout.write(prompt);
    for (const id of generate(model, ids, opts)) {
      if (opts.stopIds.includes(id)) break;
      process.stdout.write(stream.push(id));
    }
    process.stdout.write(`${stream.flush()}\n`);
  },
};
