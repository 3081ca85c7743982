/**
 * Builds a model from config.json and checkpoint tensors. Checkpoint quirks (GPT-2's Conv1D
 * [in, out] layout, name prefixes, buffers that are not weights) come from the model family's rules.
 * Every missing tensor, shape or dtype mismatch is collected, then reported at once, before any weight is
 * allocated (checkModelTensors); so are weights holding NaN or Inf, after reading.
 * With a 16-bit `baseDtype`, Linear weights and embedding tables stored in that dtype keep their bits
 * (no f32 intermediate); the rest are converted after loading (castBaseWeights).
 */
import { buildModel, type CausalLM, modelFamily } from "../models/index.js";
import { type BaseDType, castBaseWeights } from "../nn/base-dtype.js";
import { type DType, type HalfDType, HOST_LE } from "../tensor/dtype.js";
import { numel, shapeStr } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";
import { checkMemory, configLayers, estimateModelBytes } from "./memory.js";
import { describeNonFinite, FLOAT_DTYPES, type SafetensorsTensor, tensorToFloat32 } from "./safetensors.js";

export interface LoadedModel {
  model: CausalLM;
  /** Checkpoint tensors no parameter claimed (transformers warns about these too). */
  unused: string[];
}

// w: [rows, cols] -> [cols, rows], in place (through a temporary copy), so an F32 tensor that is a
// view into the file's buffer stays there and the model does not hold two copies.
function transposeInPlace<A extends Float32Array | Uint16Array>(w: A, rows: number, cols: number): A {
  const src = w.slice();
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) w[j * rows + i] = src[i * cols + j]!;
  return w;
}

const HALF_OF: Partial<Record<DType, HalfDType>> = { BF16: "bf16", F16: "f16" };

// little-endian 16-bit tensor bytes -> their bits: a view into the file's buffer where the host is
// little-endian and the tensor 2-byte aligned (no second copy of a 16-bit model), else a fresh copy
function halfBits(bytes: Uint8Array): Uint16Array {
  if (HOST_LE && bytes.byteOffset % 2 === 0)
    return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint16Array(bytes.byteLength / 2);
  for (let i = 0; i < out.length; i++) out[i] = v.getUint16(i * 2, true);
  return out;
}

export interface LoadOptions {
  /** How to store the frozen Linear weights and embedding tables (default f32). */
  baseDtype?: BaseDType;
  /** Refuse a model whose weights need more bytes than this (the Node loader passes the machine's memory). */
  memoryLimit?: number;
}

/** What a checkpoint's header says of a tensor: enough to check it before any data is read. */
export type TensorInfo = Pick<SafetensorsTensor, "dtype" | "shape"> & { file?: string };

/** The parameters and bytes of weights a model needs, from its config and the chosen base dtype. */
export interface ModelSize {
  parameters: number;
  bytes: number;
}

// Listing stops here, so a config asking for a million layers costs no more than a thousand problems.
const MAX_PROBLEMS = 1000;
const SHOWN = 20;
const STOP = new Error("too many problems");
const NO_DATA = new Float32Array(0);
/** Up to this many layers, listing a model's modules costs little (a few MiB); past it, sizes are checked first. */
const SKELETON_LAYERS = 10_000;

const size3 = (bytes: number) =>
  bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toPrecision(3)} GiB` : `${(bytes / 2 ** 20).toPrecision(3)} MiB`;

function problemList(source: string, what: string, problems: string[], advice: string): Error {
  const n = problems.length;
  const count = n > MAX_PROBLEMS ? `more than ${MAX_PROBLEMS} problems` : `${n} problem${n > 1 ? "s" : ""}`;
  const shown = problems.slice(0, SHOWN).map((e) => `  - ${e}`);
  if (n > SHOWN) shown.push(`  ... and ${n > MAX_PROBLEMS ? "at least " : ""}${n - SHOWN} more`);
  return new Error(`${source}: ${what} (${count}):\n${shown.join("\n")}\n${advice}`);
}

/**
 * Checks config.json and the checkpoint's tensors against each other before any weight is allocated or
 * read: every config field, every tensor the model needs (present, float, of the implied shape), and
 * the memory the weights need (against `opts.memoryLimit`). The model is built once with empty
 * placeholder tensors to list what it needs. Throws every problem at once; returns the model's size.
 */
export function checkModelTensors(
  config: Record<string, unknown>,
  tensors: ReadonlyMap<string, TensorInfo>,
  source: string,
  opts: LoadOptions = {},
): ModelSize {
  const configPath = `${source}/config.json`;
  const rules = modelFamily(config, configPath).checkpoint;
  const half = (opts.baseDtype ?? "f32") !== "f32";
  // Listing what the model needs builds its modules (one set per layer, no weights): a layer count
  // that makes even that costly is refused from the config's sizes alone, before anything is built.
  // Otherwise the exact figure is checked below, once the modules are listed.
  if (configLayers(config) > SKELETON_LAYERS)
    checkMemory(
      estimateModelBytes(config, half ? 2 : 4),
      opts.memoryLimit,
      configPath,
      "the sizes it gives (vocab_size, hidden_size, the layer count)",
      "check those sizes, or use a machine with more memory",
    );
  const problems: string[] = [];
  const size: ModelSize = { parameters: 0, bytes: 0 };
  try {
    buildModel(
      config,
      (name, shape, kind) => {
        const n = numel(shape);
        size.parameters += n;
        size.bytes += n * (half && (kind === "weight" || kind === "embedding") ? 2 : 4);
        const key = rules.names(name).find((k) => tensors.has(k));
        const entry = key === undefined ? undefined : tensors.get(key)!;
        const stored = rules.transposed(name) ? [shape[1]!, shape[0]!] : shape;
        if (!entry) problems.push(`missing tensor "${name}" ${shapeStr(shape)}`);
        else if (entry.shape.length !== stored.length || entry.shape.some((d, i) => d !== stored[i])) {
          problems.push(
            `tensor "${key}" has shape ${shapeStr(entry.shape)}, but config.json implies ${shapeStr(stored)}`,
          );
        } else if (!FLOAT_DTYPES.includes(entry.dtype)) {
          problems.push(
            `tensor "${key}" is stored as ${entry.dtype}, but a weight must be a float (${FLOAT_DTYPES.join(", ")})`,
          );
        }
        if (problems.length > MAX_PROBLEMS) throw STOP;
        return new Tensor(
          NO_DATA,
          shape.map(() => 0),
        );
      },
      configPath,
    );
  } catch (err) {
    if (err !== STOP) throw err;
  }
  if (problems.length > 0) {
    const stopped = problems.length > MAX_PROBLEMS;
    throw problemList(
      source,
      "the weights do not fit config.json",
      problems,
      stopped
        ? `The files hold ${tensors.size} tensors and config.json asks for many more: check its sizes (the layer count first).`
        : "Check that config.json and the safetensors files come from the same model.",
    );
  }
  if (opts.memoryLimit !== undefined && size.bytes > opts.memoryLimit) {
    const smaller = half ? "" : "store the base weights in bf16 (--base-dtype bf16) to halve it, or ";
    throw new Error(
      `${source}: the model's ${size.parameters} parameters need ${size3(size.bytes)} as ${opts.baseDtype ?? "f32"}, more than this machine's ${size3(opts.memoryLimit)} of memory; ${smaller}use a machine with more memory`,
    );
  }
  return size;
}

export function loadModelFromTensors(
  config: Record<string, unknown>,
  tensors: ReadonlyMap<string, SafetensorsTensor & { file?: string }>,
  source: string,
  opts: LoadOptions = {},
): LoadedModel {
  checkModelTensors(config, tensors, source, opts);
  const baseDtype = opts.baseDtype ?? "f32";
  const configPath = `${source}/config.json`;
  const rules = modelFamily(config, configPath).checkpoint;
  const damaged: string[] = [];
  const claimed = new Set<string>();
  const model = buildModel(
    config,
    (name, shape, kind) => {
      const key = rules.names(name).find((k) => tensors.has(k))!;
      claimed.add(key);
      const entry = tensors.get(key)!;
      const bad = describeNonFinite(entry);
      if (bad) damaged.push(`tensor "${key}" in ${entry.file ?? source} ${bad}`);
      const transposed = rules.transposed(name);
      const base = kind === "weight" || kind === "embedding";
      if (base && baseDtype !== "f32" && HALF_OF[entry.dtype] === baseDtype) {
        const bits = halfBits(entry.bytes);
        const dtype = baseDtype;
        return new Tensor(
          { dtype, bits: transposed ? transposeInPlace(bits, shape[1]!, shape[0]!) : bits },
          shape,
        );
      }
      let data = tensorToFloat32(entry);
      // a 16-bit model keeps no view into the file's buffer, so the buffer can be freed
      if (!base && baseDtype !== "f32" && data.buffer === entry.bytes.buffer) data = data.slice();
      return new Tensor(transposed ? transposeInPlace(data, shape[1]!, shape[0]!) : data, shape);
    },
    configPath,
  );
  if (damaged.length > 0) {
    throw problemList(
      source,
      "the weights hold values that are not finite",
      damaged,
      "The checkpoint is damaged: re-download it, or save it again from a run that did not diverge.",
    );
  }
  castBaseWeights(model, baseDtype);
  const unused = [...tensors.keys()].filter((k) => !claimed.has(k) && !rules.ignored(k));
  return { model, unused };
}
