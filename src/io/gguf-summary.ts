/**
 * What a GGUF file's header says, for `lora inspect`: its type (model or adapter), architecture, the
 * architecture's sizes as llama.cpp names them ({arch}.block_count, ...), the tensor count by ggml
 * type with their bytes, and every metadata key with its value (long arrays shortened to their length
 * and first elements). Reads only the header (io/gguf.ts).
 */
import type { GGUFHeader, GGUFValue } from "./gguf.js";
import { ggmlTypeName } from "./gguf-types.js";

export interface GGUFSummary {
  version: number;
  /** general.type: "model" (also when absent, as llama.cpp reads it) or "adapter". */
  type: string;
  architecture: string | null;
  name: string | null;
  /** The {arch}.* sizes present, by their key without the architecture prefix. */
  sizes: Record<string, number>;
  tensors: number;
  /** Per ggml type: how many tensors, their elements and bytes. */
  tensor_types: Record<string, { tensors: number; elements: number; bytes: number }>;
  metadata_keys: number;
  /** Every metadata value; arrays over 8 elements as "[N × first, ...]". */
  metadata: Record<string, string | number | boolean>;
}

const SIZE_KEYS = [
  "context_length",
  "embedding_length",
  "block_count",
  "feed_forward_length",
  "attention.head_count",
  "attention.head_count_kv",
  "attention.key_length",
  "attention.value_length",
  "vocab_size",
  "rope.dimension_count",
];

const shown = (v: GGUFValue): string | number | boolean => {
  if (typeof v === "bigint") return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
  if (!Array.isArray(v))
    return typeof v === "string" && v.length > 200 ? `${v.slice(0, 200)}... (${v.length} chars)` : v;
  const head = v.slice(0, 3).map((x) => JSON.stringify(typeof x === "bigint" ? x.toString() : x));
  return v.length <= 8
    ? `[${v.map((x) => JSON.stringify(typeof x === "bigint" ? x.toString() : x)).join(", ")}]`
    : `[${v.length} × ${head.join(", ")}, ...]`;
};

export function ggufSummary(h: GGUFHeader): GGUFSummary {
  const str = (k: string) => {
    const v = h.metadata.get(k);
    return typeof v === "string" ? v : null;
  };
  const arch = str("general.architecture");
  const sizes: Record<string, number> = {};
  for (const k of SIZE_KEYS) {
    const v = arch ? h.metadata.get(`${arch}.${k}`) : undefined;
    if (typeof v === "number" || typeof v === "bigint") sizes[k] = Number(v);
  }
  const tokens = h.metadata.get("tokenizer.ggml.tokens");
  if (Array.isArray(tokens) && sizes.vocab_size === undefined) sizes.vocab_size = tokens.length;
  const types: GGUFSummary["tensor_types"] = {};
  for (const t of h.tensors) {
    const e = (types[ggmlTypeName(t.type)] ??= { tensors: 0, elements: 0, bytes: 0 });
    e.tensors++;
    e.elements += t.elements;
    e.bytes += t.bytes;
  }
  return {
    version: h.version,
    type: str("general.type") ?? "model",
    architecture: arch,
    name: str("general.name"),
    sizes,
    tensors: h.tensors.length,
    tensor_types: types,
    metadata_keys: h.metadata.size,
    metadata: Object.fromEntries([...h.metadata].map(([k, v]) => [k, shown(v)])),
  };
}
