/**
 * Node: loads a GGUF model file as a model folder would load (io/gguf-model.ts does the mapping): the
 * header first, then config, names, shapes and the memory the f32 weights need are checked, then each
 * tensor is read, dequantised and renamed in turn, so the quantised bytes of only one tensor are held.
 */
import type { DType } from "../../tensor/dtype.js";
import { ggufModelConfig, ggufTensorPlan, ggufToHFTensor, ROPE_FREQS } from "../gguf-model.js";
import { dequantize } from "../gguf-quants.js";
import { ggufTokenizerFiles } from "../gguf-tokenizer.js";
import { checkModelTensors, type LoadOptions, loadModelFromTensors } from "../model-loader.js";
import type { SafetensorsTensor } from "../safetensors.js";
import type { TokenizerFiles } from "../tokenizer.js";
import { readGGUFHeader, readGGUFTensorData } from "./gguf-file.js";
import { memoryAvailable } from "./memory.js";
import type { ModelFolder } from "./model-folder.js";

const size3 = (bytes: number) =>
  bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toPrecision(3)} GiB` : `${(bytes / 2 ** 20).toPrecision(3)} MiB`;

/** The config.json object, tokenizer files and checked tensor table of a GGUF model file (no data read). */
export function readGGUFModelHeader(path: string) {
  const header = readGGUFHeader(path);
  // Llama 3.1+'s rope factors are a small tensor the config needs
  const freqs = header.tensors.find((t) => t.name === ROPE_FREQS);
  const ropeFreqs = freqs
    ? dequantize(
        readGGUFTensorData(header, [ROPE_FREQS]).get(ROPE_FREQS)!,
        freqs.type,
        freqs.elements,
        ROPE_FREQS,
      )
    : undefined;
  const config = ggufModelConfig(header, path, ropeFreqs);
  const { plan, infos } = ggufTensorPlan(header, config, path);
  let tokenizerFiles: TokenizerFiles | null = null;
  let tokenizerError: Error | null = null;
  try {
    tokenizerFiles = ggufTokenizerFiles(header, path);
  } catch (e) {
    tokenizerError = e as Error;
  }
  return { header, config, plan, infos, tokenizerFiles, tokenizerError };
}

export interface GGUFModel extends ModelFolder {
  /** The tokenizer rebuilt from the file's metadata, or null (then `tokenizerError` says why). */
  tokenizerFiles: TokenizerFiles | null;
  tokenizerError: Error | null;
}

/** Loads a GGUF model file; `opts.baseDtype` as for a folder (the weights pass through f32 first). */
export function loadGGUFModelFile(path: string, opts: LoadOptions = {}): GGUFModel {
  const { header, config, plan, infos, tokenizerFiles, tokenizerError } = readGGUFModelHeader(path);
  const memoryLimit = opts.memoryLimit ?? memoryAvailable();
  checkModelTensors(config, infos, path, { ...opts, memoryLimit });
  // dequantising holds every weight in f32 before a 16-bit --base-dtype halves it
  let f32 = 0;
  let largest = 0;
  for (const p of plan) {
    f32 += p.tensor.elements * 4;
    largest = Math.max(largest, p.tensor.bytes);
  }
  if (f32 + largest > memoryLimit)
    throw new Error(
      `${path}: dequantising this model to f32 needs ${size3(f32 + largest)}, more than this machine's ${size3(memoryLimit)} of memory; use a machine with more memory or a smaller model`,
    );
  const tensors = new Map<string, SafetensorsTensor & { file: string }>();
  for (const p of plan) {
    const bytes = readGGUFTensorData(header, [p.tensor.name]).get(p.tensor.name)!;
    tensors.set(p.hfName, { ...ggufToHFTensor(p, bytes), file: path });
  }
  const { model, unused } = loadModelFromTensors(config, tensors, path, { ...opts, memoryLimit });
  // a merged model is saved in f32: GGUF files mix types per tensor, and a merged delta is not rounded
  const dtypes = new Map(plan.map((p) => [p.hfName, { dtype: "F32" as DType }]));
  return { dir: path, config, model, unused, dtypes, tokenizerFiles, tokenizerError };
}
