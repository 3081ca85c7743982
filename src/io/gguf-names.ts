/**
 * The one table between Hugging Face checkpoint names and GGUF tensor names, for the GGUF
 * architectures this toolkit reads and writes (`llama`, `qwen2`, `qwen3`, `gpt2`), as llama.cpp's
 * `convert_hf_to_gguf.py` and gguf-py's `tensor_mapping.py` name them, plus the two transforms that
 * converter applies on the way, so that both directions can undo them:
 * - the `llama` architecture permutes the rows of `q_proj` and `k_proj` (weight and bias) from HF's
 *   rotate-half RoPE layout back to the interleaved one (`permuteRows`; `unpermuteRows` undoes it);
 *   qwen2 and qwen3 keep HF's layout (llama.cpp runs them with NEOX RoPE);
 * - `gpt2` stores its Conv1D weights ([in, out] in HF) transposed, as [out, in] row-major.
 *
 * Names are whole tensor names ("model.layers.0.self_attn.q_proj.weight" <-> "blk.0.attn_q.weight")
 * or module names without the ".weight"/".bias" ending ("model.layers.0.self_attn.q_proj" <->
 * "blk.0.attn_q"), which is what a LoRA adapter targets.
 */

export type GGUFArch = "llama" | "qwen2" | "qwen3" | "gpt2";
export const GGUF_ARCHS: readonly GGUFArch[] = ["llama", "qwen2", "qwen3", "gpt2"];

// HF model_type -> the GGUF architecture its conversion writes (convert_hf_to_gguf registers
// LlamaForCausalLM and MistralForCausalLM under LlamaModel).
const ARCH_OF_MODEL_TYPE: Record<string, GGUFArch> = {
  llama: "llama",
  mistral: "llama",
  qwen2: "qwen2",
  qwen3: "qwen3",
  gpt2: "gpt2",
};

// GGUF architecture -> the HF model_type a GGUF file of it is loaded as.
const MODEL_TYPE_OF_ARCH: Record<GGUFArch, string> = {
  llama: "llama",
  qwen2: "qwen2",
  qwen3: "qwen3",
  gpt2: "gpt2",
};

/** The GGUF architecture an HF model_type converts to ("mistral" -> "llama"), or null if none here. */
export function ggufArchOfModelType(modelType: string): GGUFArch | null {
  return Object.hasOwn(ARCH_OF_MODEL_TYPE, modelType) ? ARCH_OF_MODEL_TYPE[modelType]! : null;
}

/** The HF model_type a GGUF file of `arch` loads as, or null for an architecture not handled here. */
export function modelTypeOfGGUFArch(arch: string): string | null {
  return isGGUFArch(arch) ? MODEL_TYPE_OF_ARCH[arch] : null;
}

export function isGGUFArch(arch: string): arch is GGUFArch {
  return (GGUF_ARCHS as readonly string[]).includes(arch);
}

interface ArchNames {
  /** HF module -> GGUF module, outside the blocks. */
  global: Record<string, string>;
  /** The HF prefix of block i (the GGUF one is always `blk.{i}.`). */
  block: string;
  /** HF module inside a block -> GGUF module inside a block. */
  inBlock: Record<string, string>;
  /** HF prefixes accepted on input and dropped before matching (GPT-2 checkpoints may lack "transformer."). */
  optionalPrefix?: string;
}

const LLAMA_BLOCK: Record<string, string> = {
  input_layernorm: "attn_norm",
  "self_attn.q_proj": "attn_q",
  "self_attn.k_proj": "attn_k",
  "self_attn.v_proj": "attn_v",
  "self_attn.o_proj": "attn_output",
  post_attention_layernorm: "ffn_norm",
  "mlp.gate_proj": "ffn_gate",
  "mlp.up_proj": "ffn_up",
  "mlp.down_proj": "ffn_down",
};

const LLAMA_GLOBAL: Record<string, string> = {
  "model.embed_tokens": "token_embd",
  "model.norm": "output_norm",
  lm_head: "output",
};

const NAMES: Record<GGUFArch, ArchNames> = {
  llama: { global: LLAMA_GLOBAL, block: "model.layers.", inBlock: LLAMA_BLOCK },
  qwen2: { global: LLAMA_GLOBAL, block: "model.layers.", inBlock: LLAMA_BLOCK },
  qwen3: {
    global: LLAMA_GLOBAL,
    block: "model.layers.",
    inBlock: { ...LLAMA_BLOCK, "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm" },
  },
  gpt2: {
    global: {
      "transformer.wte": "token_embd",
      "transformer.wpe": "position_embd",
      "transformer.ln_f": "output_norm",
      lm_head: "output",
    },
    block: "transformer.h.",
    inBlock: {
      ln_1: "attn_norm",
      "attn.c_attn": "attn_qkv",
      "attn.c_proj": "attn_output",
      ln_2: "ffn_norm",
      "mlp.c_fc": "ffn_up",
      "mlp.c_proj": "ffn_down",
    },
    optionalPrefix: "transformer.",
  },
};

const invert = (m: Record<string, string>) => Object.fromEntries(Object.entries(m).map(([k, v]) => [v, k]));
const INVERSE: Record<GGUFArch, { global: Record<string, string>; inBlock: Record<string, string> }> =
  Object.fromEntries(
    GGUF_ARCHS.map((a) => [a, { global: invert(NAMES[a].global), inBlock: invert(NAMES[a].inBlock) }]),
  ) as never;

const BLOCK_INDEX = /^(0|[1-9][0-9]{0,5})\.(.+)$/;
const lookup = (m: Record<string, string>, k: string) => (Object.hasOwn(m, k) ? m[k]! : null);

/** "model.layers.3.self_attn.q_proj" -> "blk.3.attn_q" for `arch`, or null when GGUF has no such module. */
export function ggufModuleName(arch: GGUFArch, hfModule: string): string | null {
  const names = NAMES[arch];
  const global = lookup(names.global, hfModule);
  if (global) return global;
  let name = hfModule;
  if (names.optionalPrefix && !name.startsWith(names.optionalPrefix)) {
    const prefixed = lookup(names.global, names.optionalPrefix + name);
    if (prefixed) return prefixed;
    name = names.optionalPrefix + name;
  }
  if (!name.startsWith(names.block)) return null;
  const m = BLOCK_INDEX.exec(name.slice(names.block.length));
  const inner = m ? lookup(names.inBlock, m[2]!) : null;
  return inner ? `blk.${m![1]}.${inner}` : null;
}

/** "blk.3.attn_q" -> "model.layers.3.self_attn.q_proj" for `arch` (GPT-2: with "transformer."), or null. */
export function hfModuleName(arch: GGUFArch, ggufModule: string): string | null {
  const inv = INVERSE[arch];
  const global = lookup(inv.global, ggufModule);
  if (global) return global;
  if (!ggufModule.startsWith("blk.")) return null;
  const m = BLOCK_INDEX.exec(ggufModule.slice(4));
  const inner = m ? lookup(inv.inBlock, m[2]!) : null;
  return inner ? `${NAMES[arch].block}${m![1]}.${inner}` : null;
}

const SUFFIX = /\.(weight|bias)$/;

/** A whole tensor name, HF -> GGUF: "model.layers.0.self_attn.q_proj.weight" -> "blk.0.attn_q.weight", or null. */
export function ggufTensorName(arch: GGUFArch, hfName: string): string | null {
  const m = SUFFIX.exec(hfName);
  if (!m) return null;
  const module = ggufModuleName(arch, hfName.slice(0, m.index));
  return module ? `${module}.${m[1]}` : null;
}

/** A whole tensor name, GGUF -> HF: "blk.0.attn_q.weight" -> "model.layers.0.self_attn.q_proj.weight", or null. */
export function hfTensorName(arch: GGUFArch, ggufName: string): string | null {
  const m = SUFFIX.exec(ggufName);
  if (!m) return null;
  const module = hfModuleName(arch, ggufName.slice(0, m.index));
  return module ? `${module}.${m[1]}` : null;
}

/** Head counts, as config.json names them. */
export interface HeadCounts {
  num_attention_heads: number;
  /** Defaults to num_attention_heads. */
  num_key_value_heads?: number;
}

/**
 * The head count the converter permutes an HF tensor's rows with, or null when it leaves them
 * alone: for the `llama` architecture, `q_proj` (weight and bias) by num_attention_heads and
 * `k_proj` by num_key_value_heads. The same rows of a LoRA B on those modules are permuted too.
 */
export function permutedHeads(arch: GGUFArch, hfName: string, heads: HeadCounts): number | null {
  if (arch !== "llama") return null;
  if (/(^|\.)self_attn\.q_proj(\.(weight|bias))?$/.test(hfName)) return heads.num_attention_heads;
  if (/(^|\.)self_attn\.k_proj(\.(weight|bias))?$/.test(hfName))
    return heads.num_key_value_heads ?? heads.num_attention_heads;
  return null;
}

/**
 * Whether GGUF stores the HF tensor transposed: GPT-2's Conv1D weights ([in, out] in HF) are
 * written [out, in] (ggml ne = [in, out]), the layout of every other linear weight in GGUF.
 */
export function ggufTransposed(arch: GGUFArch, hfName: string): boolean {
  return arch === "gpt2" && /(^|\.)(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/.test(hfName);
}

function checkPermute(length: number, rows: number, cols: number, nHead: number): number {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0 || length !== rows * cols)
    throw new Error(`permuteRows: ${length} values are not ${rows} rows of ${cols}`);
  if (!Number.isInteger(nHead) || nHead < 1 || rows % (2 * nHead) !== 0)
    throw new Error(`permuteRows: ${rows} rows do not split into ${nHead} heads of an even size`);
  return rows / nHead / 2;
}

/**
 * HF -> GGUF for the llama architecture's q/k rows, as the converter's `permute`: the rows, viewed as
 * [nHead, 2, half, cols], become [nHead, half, 2, cols]. Within each head, output row 2i+j is input
 * row j·half+i (the rotate-half pairs (i, i+half) become adjacent). A bias is `cols` = 1.
 */
export function permuteRows(data: Float32Array, rows: number, cols: number, nHead: number): Float32Array {
  const half = checkPermute(data.length, rows, cols, nHead);
  const out = new Float32Array(data.length);
  for (let h = 0; h < nHead; h++) {
    const base = h * 2 * half;
    for (let i = 0; i < half; i++)
      for (let j = 0; j < 2; j++) {
        const to = (base + 2 * i + j) * cols;
        const from = (base + j * half + i) * cols;
        out.set(data.subarray(from, from + cols), to);
      }
  }
  return out;
}

/** GGUF -> HF: the inverse of `permuteRows` (within each head, output row j·half+i is input row 2i+j). */
export function unpermuteRows(data: Float32Array, rows: number, cols: number, nHead: number): Float32Array {
  const half = checkPermute(data.length, rows, cols, nHead);
  const out = new Float32Array(data.length);
  for (let h = 0; h < nHead; h++) {
    const base = h * 2 * half;
    for (let i = 0; i < half; i++)
      for (let j = 0; j < 2; j++) {
        const to = (base + j * half + i) * cols;
        const from = (base + 2 * i + j) * cols;
        out.set(data.subarray(from, from + cols), to);
      }
  }
  return out;
}
