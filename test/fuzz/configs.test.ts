/**
 * Fuzzing the JSON configs a model folder and an adapter folder hold: config.json (model-loader.ts,
 * through the model families), adapter_config.json (peft.ts, then attaching the adapter) and
 * tokenizer.json / tokenizer_config.json (tokenizer.ts). Inputs: valid files with 1–3 values replaced
 * by hostile ones (huge layer, head and vocab counts, fractions, wrong types, deep nesting) and text
 * damage (duplicate keys, truncation, bit flips, invalid UTF-8). Each case gives a valid result or our
 * own error naming the file; an adapter config that parses is written and read back the same, and a
 * model that loads computes finite logits.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { noGrad } from "../../src/autograd/index.js";
import { parseJsonObject } from "../../src/io/json.js";
import { checkModelTensors, loadModelFromTensors } from "../../src/io/model-loader.js";
import { adapterConfigJson, attachAdapter, parseAdapterConfig } from "../../src/io/peft.js";
import { parseSafetensors } from "../../src/io/safetensors.js";
import { Tokenizer } from "../../src/io/tokenizer.js";
import { fixtureModel, fixturesDir } from "../helpers.js";
import { asText, checkCase, count, jsonFileBytes, params, report } from "./harness.js";

const json = (path: string) => JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
const MEMORY = 2 ** 28;

interface Folder {
  dir: string;
  config: Record<string, unknown>;
  tensors: ReturnType<typeof parseSafetensors>["tensors"];
  size: number;
}
const folder = (name: string): Folder => {
  const dir = fixtureModel(name);
  const bytes = new Uint8Array(readFileSync(join(dir, "model.safetensors")));
  return {
    dir,
    config: json(join(dir, "config.json")),
    tensors: parseSafetensors(bytes, dir).tensors,
    size: bytes.length,
  };
};
const FOLDERS = [folder("llama_gqa_tied"), folder("gpt2"), folder("qwen3")];

/** config.json bytes -> the checked, loaded model, as loadModelFolder reads it. */
function loadConfig(f: Folder, bytes: Uint8Array) {
  const path = join(f.dir, "config.json");
  const config = parseJsonObject(asText(bytes, path), path);
  checkModelTensors(config, f.tensors, f.dir, { memoryLimit: MEMORY });
  return loadModelFromTensors(config, f.tensors, f.dir, { memoryLimit: MEMORY }).model;
}

describe("fuzz: config.json", () => {
  it("mutated configs of llama, gpt2 and qwen3 folders: a model with finite logits, or an error naming the folder", () => {
    fc.assert(
      fc.property(
        fc
          .integer({ min: 0, max: FOLDERS.length - 1 })
          .chain((i) => jsonFileBytes(FOLDERS[i]!.config).map((b) => [FOLDERS[i]!, b] as const)),
        ([f, bytes]) => {
          count("config.json");
          const r = checkCase(() => loadConfig(f, bytes), {
            source: f.dir,
            inputBytes: f.size + bytes.length,
          });
          if (!r.ok) return;
          const logits = checkCase(() => noGrad(() => r.value.forward(new Int32Array([1, 2]), [1, 2]).data), {
            source: f.dir,
            inputBytes: f.size,
          });
          if (logits.ok)
            assert.ok(logits.value.every(Number.isFinite), "a model that loads computes finite logits");
        },
      ),
      params(250),
    );
    report("config.json");
  });
});

const LLAMA = FOLDERS[0]!;
const ADAPTER_DIR = join(LLAMA.dir, "adapter");
const ADAPTER_CONFIG = json(join(ADAPTER_DIR, "adapter_config.json"));
const ADAPTER_BYTES = new Uint8Array(readFileSync(join(ADAPTER_DIR, "adapter_model.safetensors")));
const ADAPTER_TENSORS = parseSafetensors(ADAPTER_BYTES, ADAPTER_DIR).tensors;

describe("fuzz: adapter_config.json", () => {
  it("mutated adapter configs: parsed, written back and read the same, and attached; or an error naming the file", () => {
    const path = join(ADAPTER_DIR, "adapter_config.json");
    fc.assert(
      fc.property(jsonFileBytes(ADAPTER_CONFIG), fc.boolean(), (bytes, attach) => {
        count("adapter_config.json");
        const limits = { source: path, inputBytes: ADAPTER_BYTES.length + bytes.length };
        const r = checkCase(
          () => parseAdapterConfig(parseJsonObject(asText(bytes, path), path), path, ["q_proj", "v_proj"]),
          limits,
        );
        if (!r.ok) return;
        const again = parseAdapterConfig(adapterConfigJson(r.value, "base"), "again", []);
        assert.deepEqual(again, r.value, "adapter_config.json round trip");
        if (!attach) return;
        const { model } = loadModelFromTensors(LLAMA.config, LLAMA.tensors, LLAMA.dir);
        checkCase(() => attachAdapter(model, r.value, ADAPTER_TENSORS, path), {
          ...limits,
          source: [path, "adapter"],
          inputBytes: LLAMA.size + ADAPTER_BYTES.length,
        });
      }),
      params(600),
    );
    report("adapter_config.json");
  });
});

const TOK_DIR = join(fixturesDir, "tokenizers/tiny-chat");
const TOKENIZER_JSON = json(join(TOK_DIR, "tokenizer.json"));
const TOKENIZER_CONFIG = json(join(TOK_DIR, "tokenizer_config.json"));
const GENERATION = json(join(TOK_DIR, "generation_config.json"));

describe("fuzz: tokenizer.json and tokenizer_config.json", () => {
  it("mutated tokenizer files: encode, decode and the chat template work, or an error names the folder", () => {
    const which = fc.constantFrom("tokenizer_config.json", "tokenizer.json", "generation_config.json");
    fc.assert(
      fc.property(
        which.chain((file) =>
          jsonFileBytes(
            file === "tokenizer.json"
              ? TOKENIZER_JSON
              : file === "tokenizer_config.json"
                ? TOKENIZER_CONFIG
                : GENERATION,
          ).map((b) => [file, b] as const),
        ),
        ([file, bytes]) => {
          count("tokenizer");
          const limits = { source: TOK_DIR, inputBytes: 4096 + bytes.length, allocFactor: 64 };
          const r = checkCase(() => {
            const parsed = parseJsonObject(asText(bytes, join(TOK_DIR, file)), join(TOK_DIR, file));
            return Tokenizer.fromJSON(
              {
                tokenizerJson: file === "tokenizer.json" ? parsed : TOKENIZER_JSON,
                tokenizerConfig: file === "tokenizer_config.json" ? parsed : TOKENIZER_CONFIG,
                generationConfig: file === "generation_config.json" ? parsed : GENERATION,
              },
              TOK_DIR,
            );
          }, limits);
          if (!r.ok) return;
          const tok = r.value;
          const ids = checkCase(() => tok.encode("hello <|im_start|> world"), limits);
          if (ids.ok) {
            assert.ok(
              ids.value.every((i) => Number.isInteger(i) && i >= 0),
              `ids ${ids.value} from ${file}: ${new TextDecoder().decode(bytes).slice(0, 2000)}`,
            );
            checkCase(() => tok.decode(ids.value), limits);
          }
          if (tok.chatTemplate !== null)
            checkCase(
              () => tok.applyChatTemplate([{ role: "user", content: "hi" }], { addGenerationPrompt: true }),
              limits,
            );
        },
      ),
      params(300),
    );
    report("tokenizer");
  });
});
