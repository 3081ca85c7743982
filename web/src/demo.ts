/**
 * The embedded demo: the base model and task of `npm start` (assets/base-model, assets/task), bundled
 * by Vite as files of the page's own origin. Nothing is downloaded from elsewhere.
 */
import config from "../../assets/base-model/config.json?url";
import weights from "../../assets/base-model/model.safetensors?url";
import tokenizer from "../../assets/base-model/tokenizer.json?url";
import tokenizerConfig from "../../assets/base-model/tokenizer_config.json?url";
import train from "../../assets/task/train.jsonl?url";
import valid from "../../assets/task/valid.jsonl?url";

export const DEMO_NAME = "assets/base-model";
export const DEMO_MODEL: Record<string, string> = {
  "config.json": config,
  "model.safetensors": weights,
  "tokenizer.json": tokenizer,
  "tokenizer_config.json": tokenizerConfig,
};
export const DEMO_DATA = { train, valid };
/** The first of npm start's prompts. */
export const DEMO_PROMPT = '"Where have you been?" she asked.';
