/** `lora serve`: an OpenAI-compatible HTTP server for one base model and many named LoRA adapters. */
import { basename, resolve } from "node:path";
import { readAdapterInput } from "../io/node/adapter-folder.js";
import { modelFamily } from "../models/index.js";
import { adapterDirReader } from "../serve/node/adapter-dir.js";
import { createApiServer } from "../serve/node/http-server.js";
import { createServing } from "../serve/serving.js";
import { type Command, num, required, str, UsageError, type Values } from "./command.js";
import { BASE_DTYPE_FLAG, baseDtypeOf, contextLength, loadModel } from "./load.js";

export const serveCommand: Command = {
  name: "serve",
  summary: "Serve a model and its LoRA adapters over an OpenAI-compatible HTTP API (/v1/completions, ...).",
  usage:
    "lora serve --model DIR [--adapter NAME=PATH]... [--adapter-dir DIR] [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-batch N] [--max-tokens N] [--max-queue N] [--max-body BYTES] [--base-dtype auto]",
  flags: {
    model: {
      type: "string",
      valueName: "DIR",
      description: "model folder (config.json, weights, tokenizer.json)",
    },
    adapter: {
      type: "string",
      valueName: "NAME=PATH",
      multiple: true,
      description: "a PEFT adapter folder served as model NAME",
    },
    "adapter-dir": {
      type: "string",
      valueName: "DIR",
      description: "allow POST /v1/load_lora_adapter for adapter folders inside DIR (only there)",
    },
    host: {
      type: "string",
      valueName: "HOST",
      description: "address to bind (default 127.0.0.1: this machine only)",
    },
    port: { type: "string", valueName: "PORT", description: "port (default 8000; 0 picks a free one)" },
    "api-key": {
      type: "string",
      valueName: "KEY",
      description: "require 'Authorization: Bearer KEY' on /v1/*",
    },
    "max-batch": {
      type: "string",
      valueName: "N",
      description: "sequences decoded together, one token each per batched step (default 16)",
    },
    "max-tokens": {
      type: "string",
      valueName: "N",
      description: "largest max_tokens a request may ask (default 512)",
    },
    "max-queue": {
      type: "string",
      valueName: "N",
      description: "requests that may wait; more get 429 (default 64)",
    },
    "max-body": {
      type: "string",
      valueName: "BYTES",
      description: "largest request body; larger gets 413 (default 1048576)",
    },
    "base-dtype": BASE_DTYPE_FLAG,
  },
  examples: [
    "lora serve --model ../shared/data/stories260K-hf --adapter stories=out/adapter --adapter-dir out --port 8000",
  ],
  async run(v: Values) {
    const dir = required(v, "model", "serve");
    const { model, tokenizer, config } = loadModel(dir, undefined, {
      needTokenizer: true,
      baseDtype: baseDtypeOf(v),
    });
    const targets = modelFamily(config).defaultTargets;
    const adapterDir = str(v, "adapter-dir");
    const serving = createServing({
      model,
      tokenizer: tokenizer!,
      baseName: basename(resolve(dir)),
      contextLength: contextLength(config),
      maxBatch: num(v, "max-batch", 16, { int: true, min: 1 }),
      maxQueue: num(v, "max-queue", 64, { int: true, min: 0 }),
      maxTokens: num(v, "max-tokens", 512, { int: true, min: 1 }),
      apiKey: str(v, "api-key"),
      readAdapter: adapterDir ? adapterDirReader(adapterDir, targets) : undefined,
    });
    for (const spec of (v.adapter as string[] | undefined) ?? []) {
      const eq = spec.indexOf("=");
      if (eq <= 0 || eq === spec.length - 1)
        throw new UsageError(
          `--adapter "${spec}": expected NAME=PATH, e.g. --adapter pirate=out/pirate/adapter`,
        );
      const name = spec.slice(0, eq);
      const path = spec.slice(eq + 1);
      serving.engine.load(name, readAdapterInput(path, { defaultTargets: targets }), path);
    }
    const server = createApiServer(serving.api, {
      maxBody: num(v, "max-body", 1 << 20, { int: true, min: 1 }),
    });
    const host = str(v, "host") ?? "127.0.0.1";
    const port = num(v, "port", 8000, { int: true, min: 0, max: 65535 });
    await new Promise<void>((res, rej) => {
      server.once("error", rej);
      server.listen(port, host, () => res());
    });
    const addr = server.address();
    const shown = typeof addr === "object" && addr ? addr.port : port;
    const names = serving.engine.adapters.names();
    console.log(`lora serve: http://${host.includes(":") ? `[${host}]` : host}:${shown}/v1`);
    console.log(`  base model: ${serving.engine.baseName}`);
    console.log(
      `  adapters: ${names.length ? names.join(", ") : "none"}${adapterDir ? ` (run-time loading from ${adapterDir})` : ""}`,
    );
    // SIGTERM / SIGINT: stop accepting, finish what is in flight, then exit
    await new Promise<void>((res) => {
      const stop = (signal: string) => {
        console.log(
          `lora serve: ${signal}: draining ${serving.scheduler.active + serving.scheduler.waiting} request(s)`,
        );
        // close() stops accepting; its callback runs once every connection has ended
        const closed = new Promise<void>((r) => server.close(() => r()));
        void serving.scheduler.drain().then(async () => {
          // the last responses are still being written: let them end, then cut what stays open
          server.closeIdleConnections();
          await Promise.race([closed, new Promise((r) => setTimeout(r, 2000).unref())]);
          server.closeAllConnections();
          res();
        });
      };
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.once("SIGINT", () => stop("SIGINT"));
    });
    console.log("lora serve: stopped");
  },
};
