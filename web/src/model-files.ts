/**
 * A Hugging Face model folder picked in the browser (a FileList from <input webkitdirectory>, or the
 * embedded demo fetched from the page's own origin): config.json, the safetensors weights (one file,
 * or the shards model.safetensors.index.json lists) and the tokenizer files. Headers are read first,
 * so that config.json, the tensors and the memory they need are checked before any weight is read.
 */
import {
  checkModelTensors,
  type ModelSize,
  parseSafetensorsHeader,
  type SafetensorsTensor,
  safetensorsHeaderLength,
  safetensorsViews,
  Tokenizer,
} from "../../src/index.js";

/** Something with a name, a size and a slice of bytes: a File, or a Blob fetched from the origin. */
export type NamedBlob = { name: string; blob: Blob };

export interface ModelInput {
  /** The folder's name, for messages and the adapter's base_model_name_or_path. */
  name: string;
  config: Record<string, unknown>;
  weights: NamedBlob[];
  tokenizer: Tokenizer;
  /** The tokenizer files, copied into a merged model's folder. */
  tokenizerFiles: NamedBlob[];
  size: ModelSize;
}

const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
  "chat_template.jinja",
];

const json = async (b: NamedBlob, where: string) => {
  try {
    return JSON.parse(await b.blob.text()) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${where}/${b.name}: not valid JSON (${(e as Error).message})`);
  }
};

async function header(b: NamedBlob, where: string) {
  const source = `${where}/${b.name}`;
  const n = safetensorsHeaderLength(
    new Uint8Array(await b.blob.slice(0, 8).arrayBuffer()),
    b.blob.size,
    source,
  );
  const bytes = new Uint8Array(await b.blob.slice(8, 8 + n).arrayBuffer());
  return parseSafetensorsHeader(bytes, b.blob.size, source);
}

/** The memory a tab may give the weights: the device's (Chrome reports up to 8 GiB), at most 4 GiB. */
export function tabMemoryLimit(): number {
  const gib = (navigator as { deviceMemory?: number }).deviceMemory ?? 4;
  return Math.min(gib, 4) * 2 ** 30;
}

/** Reads and checks a model folder's small files and weight headers; throws a message saying what to pick. */
export async function openModel(name: string, files: NamedBlob[], memoryLimit: number): Promise<ModelInput> {
  const byName = new Map(files.map((f) => [f.name, f]));
  const have = files.length
    ? `it holds ${files
        .slice(0, 8)
        .map((f) => f.name)
        .join(", ")}`
    : "it is empty";
  const configFile = byName.get("config.json");
  if (!configFile)
    throw new Error(
      `${name}: no config.json (${have}); pick a Hugging Face model folder holding config.json, model.safetensors and tokenizer.json`,
    );
  const config = await json(configFile, name);
  let weights: NamedBlob[];
  const index = byName.get("model.safetensors.index.json");
  if (byName.has("model.safetensors")) weights = [byName.get("model.safetensors")!];
  else if (index) {
    const map = (await json(index, name)).weight_map as Record<string, string> | undefined;
    const shards = [...new Set(Object.values(map ?? {}))].sort();
    const missing = shards.filter((s) => !byName.has(s));
    if (!map || missing.length)
      throw new Error(
        `${name}/model.safetensors.index.json: ${map ? `the shards ${missing.join(", ")} are not in the folder` : 'no "weight_map"'}; pick the whole model folder`,
      );
    weights = shards.map((s) => byName.get(s)!);
  } else
    throw new Error(
      `${name}: no model.safetensors or model.safetensors.index.json (${have}); a folder of safetensors weights is needed (pytorch_model.bin is not read)`,
    );
  const tokFile = byName.get("tokenizer.json");
  if (!tokFile)
    throw new Error(`${name}: no tokenizer.json; the page trains on text, which needs the model's tokenizer`);
  const infos = new Map<string, { dtype: SafetensorsTensor["dtype"]; shape: number[]; file: string }>();
  for (const w of weights)
    for (const [t, e] of (await header(w, name)).entries)
      infos.set(t, { dtype: e.dtype, shape: e.shape, file: w.name });
  // config.json against the tensors, and the memory the f32 weights need, before any weight is read
  const size = checkModelTensors(config, infos, name, { memoryLimit, baseDtype: "f32" });
  const optional = async (f: string) => (byName.has(f) ? json(byName.get(f)!, name) : null);
  let tokenizerConfig = await optional("tokenizer_config.json");
  const jinja = byName.get("chat_template.jinja");
  if (tokenizerConfig?.chat_template === undefined && jinja)
    tokenizerConfig = { ...tokenizerConfig, chat_template: await jinja.blob.text() };
  const tokenizer = Tokenizer.fromJSON({
    tokenizerJson: await json(tokFile, name),
    tokenizerConfig,
    generationConfig: await optional("generation_config.json"),
  });
  const tokenizerFiles = TOKENIZER_FILES.filter((f) => byName.has(f)).map((f) => byName.get(f)!);
  return { name, config, weights, tokenizer, tokenizerFiles, size };
}

/** Every tensor of the weights, read (views into one buffer per file). */
export async function readWeights(
  model: ModelInput,
): Promise<Map<string, SafetensorsTensor & { file: string }>> {
  const out = new Map<string, SafetensorsTensor & { file: string }>();
  for (const w of model.weights) {
    const h = await header(w, model.name);
    const data = new Uint8Array(await w.blob.slice(h.dataStart, h.dataStart + h.dataUsed).arrayBuffer());
    for (const [t, e] of safetensorsViews(h, data).tensors) out.set(t, { ...e, file: w.name });
  }
  return out;
}
