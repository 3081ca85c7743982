/** Node file layer: read a .safetensors file or a (sharded) Hugging Face model folder; write atomically. */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { dirname, join } from "node:path";
import type { DType } from "../../tensor/dtype.js";
import type { InputError } from "../input-error.js";
import {
  parseSafetensorsHeader,
  SafetensorsError,
  type SafetensorsFile,
  type SafetensorsHeader,
  type SafetensorsTensor,
  safetensorsHeaderLength,
  safetensorsViews,
} from "../safetensors.js";
import { fileInFolder } from "./inside-folder.js";
import { readJson } from "./json-file.js";
import { readAt, withFile } from "./read-file.js";

export interface ModelWeightsTensor extends SafetensorsTensor {
  /** Path of the file holding this tensor. */
  file: string;
}

export interface ModelWeights {
  tensors: Map<string, ModelWeightsTensor>;
  /** The safetensors `__metadata__` (merged over shards, first shard wins). */
  metadata: Record<string, string>;
  /** The `metadata` object of model.safetensors.index.json (e.g. total_size); {} for a single file. */
  indexMetadata: Record<string, unknown>;
}

const errCode = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | null)?.code;
const errText = (err: unknown): string => (err instanceof Error ? err.message : String(err));
const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** A file's validated header: enough to check names, dtypes, shapes and sizes before reading any data. */
export interface SafetensorsFileHeader extends SafetensorsHeader {
  path: string;
  /** The file's size when the header was read. */
  size: number;
}

function readHeader(fd: number, size: number, path: string): SafetensorsFileHeader {
  const headerLen = safetensorsHeaderLength(readAt(fd, 0, Math.min(size, 8)), size, path);
  return { path, size, ...parseSafetensorsHeader(readAt(fd, 8, headerLen), size, path) };
}

// Only the bytes the header's tensors use are read: a file whose header lists nothing costs nothing.
function readData(fd: number, size: number, header: SafetensorsFileHeader): SafetensorsFile {
  const data = readAt(fd, header.dataStart, header.dataUsed);
  if (size !== header.size || data.byteLength < header.dataUsed) {
    throw new SafetensorsError(header.path, [
      `the file changed (${header.size} -> ${size} bytes) after its header was read; retry once nothing writes it`,
    ]);
  }
  return safetensorsViews(header, data);
}

/** Reads and validates only the header of a .safetensors file (its first 8 + header-length bytes). */
export function readSafetensorsHeader(path: string): SafetensorsFileHeader {
  return withFile(path, (fd, size) => readHeader(fd, size, path));
}

/** Reads the tensors a header (from readSafetensorsHeader) lists, as views into one buffer. */
export function readSafetensorsData(header: SafetensorsFileHeader): SafetensorsFile {
  return withFile(header.path, (fd, size) => readData(fd, size, header));
}

/**
 * Reads and validates one .safetensors file: the header first, then only the data its tensors use.
 * Throws SafetensorsError (content) or Error (I/O), naming the file.
 */
export function readSafetensorsFile(path: string): SafetensorsFile {
  return withFile(path, (fd, size) => readData(fd, size, readHeader(fd, size, path)));
}

/** A model folder's tensors as their headers list them (no data read yet), and the headers to read. */
export interface ModelWeightHeaders {
  tensors: Map<string, { dtype: DType; shape: number[]; file: string }>;
  metadata: Record<string, string>;
  indexMetadata: Record<string, unknown>;
  files: SafetensorsFileHeader[];
}

/**
 * Reads the headers of a Hugging Face model folder's weights: model.safetensors, or the shards that
 * model.safetensors.index.json lists. Every problem (of the index and of each shard) is reported at once.
 */
export function readModelWeightHeaders(dir: string): ModelWeightHeaders {
  const single = join(dir, "model.safetensors");
  if (fs.existsSync(single)) {
    const header = readSafetensorsHeader(single);
    const tensors = new Map([...header.entries].map(([name, e]) => [name, { ...e, file: single }]));
    return { tensors, metadata: header.metadata, indexMetadata: {}, files: [header] };
  }
  const indexPath = join(dir, "model.safetensors.index.json");
  if (fs.existsSync(indexPath)) return readShardHeaders(dir, indexPath);
  throw new Error(describeMissingWeights(dir));
}

/** Reads the data of every file in `headers`; tensor bytes are views into one buffer per file. */
export function readModelWeightData(headers: ModelWeightHeaders): ModelWeights {
  const tensors = new Map<string, ModelWeightsTensor>();
  for (const header of headers.files) {
    for (const [name, t] of readSafetensorsData(header).tensors)
      tensors.set(name, { ...t, file: header.path });
  }
  return { tensors, metadata: headers.metadata, indexMetadata: headers.indexMetadata };
}

/** Reads a Hugging Face model folder: model.safetensors, or shards listed in model.safetensors.index.json. */
export function readModelWeights(dir: string): ModelWeights {
  return readModelWeightData(readModelWeightHeaders(dir));
}

function describeMissingWeights(dir: string): string {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return `${dir}: folder not found; pass a Hugging Face model folder holding config.json and model.safetensors`;
  }
  if (names.some((n) => /^pytorch_model.*\.bin(\.index\.json)?$/.test(n))) {
    return (
      `${dir}: only a PyTorch pickle checkpoint (pytorch_model.bin) is here, and pickle checkpoints are not read ` +
      "(loading them can run arbitrary code). Convert to safetensors with Python: " +
      "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out_dir, safe_serialization=True)"
    );
  }
  const listing = names.length === 0 ? "it is empty" : `it holds ${names.slice(0, 10).join(", ")}`;
  return `${dir}: no model.safetensors or model.safetensors.index.json (${listing}); pass a Hugging Face model folder`;
}

function readShardHeaders(dir: string, indexPath: string): ModelWeightHeaders {
  const index = readJson(indexPath)!;
  if (!isPlainObject(index.weight_map))
    throw new Error(`${indexPath}: has no "weight_map" object; re-download it`);
  const problems: string[] = [];
  const namesByShard = new Map<string, string[]>();
  for (const [name, file] of Object.entries(index.weight_map)) {
    try {
      fileInFolder(dir, file, indexPath, `weight_map "${name}":`);
    } catch (e) {
      problems.push((e as InputError).problem);
      continue;
    }
    const names = namesByShard.get(file as string) ?? [];
    names.push(name);
    namesByShard.set(file as string, names);
  }

  const tensors: ModelWeightHeaders["tensors"] = new Map();
  const metadata: Record<string, string> = {};
  const files: SafetensorsFileHeader[] = [];
  for (const [file, names] of namesByShard) {
    const path = join(dir, file);
    let shard: SafetensorsFileHeader;
    try {
      shard = readSafetensorsHeader(path);
    } catch (err) {
      if (err instanceof SafetensorsError) problems.push(...err.problems.map((p) => `${file}: ${p}`));
      else problems.push(errText(err));
      continue;
    }
    files.push(shard);
    for (const name of names) {
      if (!shard.entries.has(name))
        problems.push(`"${name}" is listed under ${file} in weight_map but ${file} lacks it`);
    }
    for (const [name, e] of shard.entries) {
      const other = tensors.get(name);
      if (other) problems.push(`"${name}" appears in two shards: ${other.file} and ${path}`);
      else tensors.set(name, { ...e, file: path });
    }
    for (const [k, v] of Object.entries(shard.metadata)) if (!Object.hasOwn(metadata, k)) metadata[k] = v;
  }
  if (problems.length > 0) {
    throw new SafetensorsError(
      indexPath,
      problems,
      "invalid sharded checkpoint; re-download or re-save the shards named",
    );
  }
  const indexMetadata = isPlainObject(index.metadata) ? index.metadata : {};
  return { tensors, metadata, indexMetadata, files };
}

/**
 * Writes `data` to `path` atomically: temp file beside it, fsync, rename over `path`, fsync the folder.
 * On failure the temp file is removed and the error names `path` (and says so when the disk is full).
 */
export function writeFileAtomic(path: string, data: Uint8Array | string): void {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, "wx");
    for (let at = 0; at < bytes.byteLength; ) at += fs.writeSync(fd, bytes, at, bytes.byteLength - at);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, path);
  } catch (err) {
    try {
      if (fd !== undefined) fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
    } catch {
      // Keep the original error.
    }
    throw new Error(describeWriteError(path, err), { cause: err });
  }
  try {
    const dirFd = fs.openSync(dirname(path), "r");
    try {
      fs.fsyncSync(dirFd);
    } finally {
      fs.closeSync(dirFd);
    }
  } catch {
    // Best effort: some platforms (Windows) and file systems cannot fsync a folder.
  }
}

function describeWriteError(path: string, err: unknown): string {
  const code = errCode(err);
  const why = errText(err);
  if (code === "ENOSPC" || code === "EDQUOT") {
    return `${path}: cannot write: the disk is full (${why}); free some space or write elsewhere, then retry`;
  }
  if (code === "ENOENT")
    return `${path}: cannot write: folder ${dirname(path)} does not exist; create it first`;
  if (code === "EACCES" || code === "EPERM" || code === "EROFS") {
    return `${path}: cannot write: permission denied or read-only (${why}); choose a writable location`;
  }
  return `${path}: cannot write: ${why}`;
}
