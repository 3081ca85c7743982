/**
 * The files of a PiSSA / OLoRA adapter converted to a plain LoRA of the original base (lora/convert.ts),
 * as PEFT's save_pretrained(path_initial_model_for_weight_conversion=…) writes them: rank 2r tensors
 * under the usual PEFT keys, and adapter_config.json with init_lora_weights true.
 */
import type { LoraConfig } from "../lora/config.js";
import { convertToLora, plainLoraConfig } from "../lora/convert.js";
import { isMutatingInit } from "../lora/init.js";
import type { Module } from "../nn/module.js";
import { adapterConfigJson } from "./peft.js";
import { serializeSafetensors } from "./safetensors.js";

/** adapter_model.safetensors and adapter_config.json of the converted adapter. */
export function plainLoraAdapterFiles(
  model: Module,
  config: LoraConfig,
  baseModel: string,
): Record<string, Uint8Array | string> {
  const tensors = convertToLora(model).flatMap((l) => [
    {
      name: `base_model.model.${l.path}.lora_A.weight`,
      dtype: "F32" as const,
      shape: [l.r, l.inFeatures],
      data: l.A,
    },
    {
      name: `base_model.model.${l.path}.lora_B.weight`,
      dtype: "F32" as const,
      shape: [l.outFeatures, l.r],
      data: l.B,
    },
  ]);
  return {
    "adapter_model.safetensors": serializeSafetensors(tensors, { format: "pt" }),
    "adapter_config.json": `${JSON.stringify(adapterConfigJson(plainLoraConfig(config), baseModel), null, 2)}\n`,
  };
}

/**
 * Throws, naming the adapter and saying how to convert it, when a PiSSA / OLoRA adapter is about to go
 * where only a plain LoRA of the original base works (`where`: "llama.cpp's GGUF format", say).
 */
export function refuseMutatedAdapter(config: LoraConfig, source: string, where: string): void {
  const init = config.init_lora_weights;
  if (!isMutatingInit(init)) return;
  throw new Error(
    `${source}: the adapter has init_lora_weights ${JSON.stringify(init)}: it was trained on a residual of the base weights (W0 - s·B0·A0) that ${where} cannot recompute, so it must first become a plain LoRA of the original base: for a lora train run, lora train --resume RUN_FOLDER --convert-to-lora writes that adapter; for one PEFT saved, save_pretrained(..., path_initial_model_for_weight_conversion=...)`,
  );
}
