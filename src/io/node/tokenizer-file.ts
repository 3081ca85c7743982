/** Node: loads a Tokenizer from a model folder (tokenizer.json, optional tokenizer_config.json / generation_config.json). */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "../tokenizer.js";
import { readJson } from "./json-file.js";
import { readTextFile } from "./read-file.js";

const readOptional = (path: string) => readJson(path, true);

export function loadTokenizer(dir: string): Tokenizer {
  const path = join(dir, "tokenizer.json");
  if (!existsSync(path)) {
    throw new Error(
      `no tokenizer found: ${path} does not exist. Put the model's tokenizer.json there ` +
        "(e.g. save it with transformers: AutoTokenizer.from_pretrained(name).save_pretrained(dir))",
    );
  }
  let tokenizerConfig = readOptional(join(dir, "tokenizer_config.json"));
  // Recent transformers saves the chat template beside tokenizer_config.json instead of inside it.
  const jinja = join(dir, "chat_template.jinja");
  if (tokenizerConfig?.chat_template === undefined && existsSync(jinja)) {
    tokenizerConfig = { ...tokenizerConfig, chat_template: readTextFile(jinja) };
  }
  return Tokenizer.fromJSON(
    {
      tokenizerJson: readJson(path)!,
      tokenizerConfig,
      generationConfig: readOptional(join(dir, "generation_config.json")),
    },
    dir,
  );
}
