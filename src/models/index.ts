/** The model registry: model_type -> config parser, builder, and checkpoint naming rules. */
import { Gemma3ForCausalLM, parseGemma3Config } from "./gemma3.js";
import {
  GEMMA3_TOWERS,
  Gemma3ForConditionalGeneration,
  gemma3MultimodalCheckpoint,
  parseGemma3MultimodalConfig,
} from "./gemma3-multimodal.js";
import { GPT2LMHeadModel, gpt2Checkpoint, parseGPT2Config } from "./gpt2.js";
import { LLAMA_TYPES, LlamaForCausalLM, llamaCheckpoint, parseLlamaConfig } from "./llama.js";
import type { CausalLM, ParamFactory } from "./model.js";
import { Phi3ForCausalLM, parsePhi3Config } from "./phi3.js";

export type { CausalLM, ParamFactory, ParamKind } from "./model.js";
export { randomParams } from "./model.js";

export interface CheckpointRules {
  names(param: string): string[];
  transposed(param: string): boolean;
  ignored(name: string): boolean;
  /** Parts of a multimodal checkpoint the text model does not build (their tensors stay unused, and a
   *  merged folder carries them over unchanged). */
  towers?: readonly { pattern: RegExp; what: string }[];
}

export interface ModelFamily {
  /** `source` names config.json in errors. */
  build(config: Record<string, unknown>, params: ParamFactory, source?: string): CausalLM;
  checkpoint: CheckpointRules;
  /** PEFT's default LoRA targets for this family. */
  defaultTargets: string[];
  /** The checkpoint stores linear weights [in, out] (GPT-2's Conv1D): PEFT's fan_in_fan_out. */
  fanInFanOut: boolean;
  /** Positions are a learned table (GPT-2's wpe), so nothing exists past the context; else RoPE. */
  learnedPositions: boolean;
}

const gpt2: ModelFamily = {
  build: (json, p, source) => new GPT2LMHeadModel(parseGPT2Config(json, source), p),
  checkpoint: gpt2Checkpoint,
  defaultTargets: ["c_attn"],
  fanInFanOut: true,
  learnedPositions: true,
};
const llama: ModelFamily = {
  build: (json, p, source) => new LlamaForCausalLM(parseLlamaConfig(json, source), p),
  checkpoint: llamaCheckpoint,
  defaultTargets: ["q_proj", "v_proj"],
  fanInFanOut: false,
  learnedPositions: false,
};
const gemma3: ModelFamily = {
  build: (json, p, source) => new Gemma3ForCausalLM(parseGemma3Config(json, source), p),
  checkpoint: llamaCheckpoint, // the same names; a tied head may be stored too
  defaultTargets: ["q_proj", "v_proj"],
  fanInFanOut: false,
  learnedPositions: false,
};

// PEFT has no default targets for the multimodal gemma3 (a list would also match the vision tower's)
const gemma3Multimodal: ModelFamily = {
  build: (json, p, source) =>
    new Gemma3ForConditionalGeneration(parseGemma3MultimodalConfig(json, source), p),
  checkpoint: { ...gemma3MultimodalCheckpoint, towers: GEMMA3_TOWERS },
  defaultTargets: [],
  fanInFanOut: false,
  learnedPositions: false,
};

const phi3: ModelFamily = {
  build: (json, p, source) => new Phi3ForCausalLM(parsePhi3Config(json, source), p),
  checkpoint: llamaCheckpoint,
  defaultTargets: [],
  fanInFanOut: false,
  learnedPositions: false,
};

// PEFT's default targets per model_type (its TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING);
// smollm3, phi3 and gemma3 have none there, so --targets is required, as PEFT requires target_modules
const families: Record<string, ModelFamily> = {
  gpt2,
  gemma3_text: gemma3,
  gemma3: gemma3Multimodal,
  phi3,
  ...Object.fromEntries(
    LLAMA_TYPES.map((t) => [t, t === "smollm3" ? { ...llama, defaultTargets: [] } : llama]),
  ),
};

export const SUPPORTED_MODEL_TYPES = Object.keys(families).sort();

/** The family for a config.json, or an error naming the supported model types. */
export function modelFamily(config: Record<string, unknown>, source = "config.json"): ModelFamily {
  const type = config.model_type;
  const family = typeof type === "string" ? families[type] : undefined;
  if (!family) {
    throw new Error(
      `${source}: model_type ${JSON.stringify(type)} is not supported; supported: ${SUPPORTED_MODEL_TYPES.join(", ")}`,
    );
  }
  return family;
}

/** Builds a model from a config.json object (read from `source`), creating each parameter with `params`. */
export function buildModel(
  config: Record<string, unknown>,
  params: ParamFactory,
  source = "config.json",
): CausalLM {
  return modelFamily(config, source).build(config, params, source);
}
