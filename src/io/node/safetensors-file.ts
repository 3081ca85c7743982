/** Node file layer: read a .safetensors file or a (sharded) Hugging Face model folder; write atomically. */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { dirname, join } from "node:path";
import {
  parseSafetensors,
  SafetensorsError,
  type SafetensorsFile,
  type SafetensorsTensor,
} from "../safetensors.js";

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

/** Reads the whole file into one buffer (no further copies); errors name the path and say what to do. */
function readWhole(path: string): Uint8Array {
  let fd: number | undefined;
  try {
    fd = fs.openSync(path, "r");
    const stat = fs.fstatSync(fd);
    if (stat.isDirectory()) throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
    const bytes = new Uint8Array(stat.size);
    let at = 0;
    while (at < bytes.length) {
      const n = fs.readSync(fd, bytes, at, Math.min(bytes.length - at, 1 << 30), at);
      if (n === 0) break; // the file shrank while we read it: parsing reports the truncation
      at += n;
    }
    return at === bytes.length ? bytes : bytes.subarray(0, at);
  } catch (err) {
    const code = errCode(err);
    const why =
      code === "ENOENT"
        ? "file not found; check the path and that the download finished"
        : code === "EISDIR"
          ? "is a folder; pass a .safetensors file (or use readModelWeights)"
          : code === "EACCES" || code === "EPERM"
            ? "permission denied; check the file's permissions"
            : err instanceof RangeError
              ? "too large to hold in memory; use a sharded checkpoint"
              : `cannot read: ${errText(err)}`;
    throw new Error(`${path}: ${why}`, { cause: err });
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Reads and validates one .safetensors file; throws SafetensorsError (content) or Error (I/O), naming it. */
export function readSafetensorsFile(path: string): SafetensorsFile {
  return parseSafetensors(readWhole(path), path);
}

/** Reads a Hugging Face model folder: model.safetensors, or shards listed in model.safetensors.index.json. */
export function readModelWeights(dir: string): ModelWeights {
  const single = join(dir, "model.safetensors");
  if (fs.existsSync(single)) {
    const { tensors, metadata } = readSafetensorsFile(single);
    const withFile = new Map([...tensors].map(([name, t]) => [name, { ...t, file: single }]));
    return { tensors: withFile, metadata, indexMetadata: {} };
  }
  const indexPath = join(dir, "model.safetensors.index.json");
  if (fs.existsSync(indexPath)) return readSharded(dir, indexPath);
  throw new Error(describeMissingWeights(dir));
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

function readSharded(dir: string, indexPath: string): ModelWeights {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, "utf8"));
  } catch (err) {
    throw new Error(`${indexPath}: cannot read the shard index (${errText(err)}); re-download it`, {
      cause: err,
    });
  }
  if (!isPlainObject(index) || !isPlainObject(index.weight_map)) {
    throw new Error(`${indexPath}: has no "weight_map" object; re-download it`);
  }
  const problems: string[] = [];
  const namesByShard = new Map<string, string[]>();
  for (const [name, file] of Object.entries(index.weight_map)) {
    if (typeof file !== "string" || !/^[^/\\]+$/.test(file) || file === "." || file === "..") {
      problems.push(`weight_map "${name}": ${JSON.stringify(file)} is not a file name in this folder`);
      continue;
    }
    const names = namesByShard.get(file) ?? [];
    names.push(name);
    namesByShard.set(file, names);
  }

  const tensors = new Map<string, ModelWeightsTensor>();
  const metadata: Record<string, string> = {};
  for (const [file, names] of namesByShard) {
    const path = join(dir, file);
    let shard: SafetensorsFile;
    try {
      shard = readSafetensorsFile(path);
    } catch (err) {
      if (err instanceof SafetensorsError) problems.push(...err.problems.map((p) => `${file}: ${p}`));
      else problems.push(errText(err));
      continue;
    }
    for (const name of names) {
      if (!shard.tensors.has(name))
        problems.push(`"${name}" is listed under ${file} in weight_map but ${file} lacks it`);
    }
    for (const [name, t] of shard.tensors) {
      const other = tensors.get(name);
      if (other) problems.push(`"${name}" appears in two shards: ${other.file} and ${path}`);
      else tensors.set(name, { ...t, file: path });
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
  return { tensors, metadata, indexMetadata };
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
