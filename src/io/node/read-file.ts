/**
 * Opening files to read, for every reader in io/node: only regular files (a FIFO blocks forever, a device
 * never ends), read in bounded pieces, with one-line errors that name the file and say what to do.
 */
import { constants } from "node:buffer";
import fs from "node:fs";
import { decodeTextFile } from "../json.js";

const errCode = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | null)?.code;
// An error of the file system or of allocation (not one of ours, which already name the file).
const systemError = (err: unknown) => errCode(err) !== undefined || err instanceof RangeError;

/** What a path that is not a regular file is, in words. */
function kindOf(stat: fs.Stats): string {
  if (stat.isDirectory()) return "a folder";
  if (stat.isFIFO()) return "a named pipe (FIFO)";
  if (stat.isSocket()) return "a socket";
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return "a device";
  return "something else";
}

/** The error for a file that cannot be read: the path, why, and what to do. */
export function readError(path: string, err: unknown): Error {
  const code = errCode(err);
  const why =
    code === "ENOENT"
      ? "file not found; check the path and that the download finished"
      : code === "EACCES" || code === "EPERM"
        ? "permission denied; check the file's permissions"
        : err instanceof RangeError
          ? "too large to hold in memory; use a sharded checkpoint or a smaller file"
          : `${code ?? (err as Error).message}; check the path`;
  return new Error(`${path}: cannot read: ${why}`, { cause: err });
}

/**
 * Opens `path` for reading once it is known to be a regular file (symbolic links are followed). Anything
 * else is refused before it is opened, since opening a FIFO waits for a writer. The caller closes `fd`.
 */
export function openFile(path: string): { fd: number; size: number } {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(path);
  } catch (err) {
    throw readError(path, err);
  }
  const notFile = (s: fs.Stats) =>
    new Error(`${path}: cannot read: it is ${kindOf(s)}, not a regular file; pass the file itself`);
  if (!stat.isFile()) throw notFile(stat);
  let fd: number | undefined;
  try {
    // O_NONBLOCK: should the path become a FIFO after the check, opening it still returns at once.
    fd = fs.openSync(path, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
    const opened = fs.fstatSync(fd);
    if (!opened.isFile()) throw notFile(opened);
    return { fd, size: opened.size };
  } catch (err) {
    if (fd !== undefined) fs.closeSync(fd);
    throw systemError(err) ? readError(path, err) : err;
  }
}

/** `length` bytes of `fd` from `position`, read in pieces of at most 1 GiB; fewer when the file ends first. */
export function readAt(fd: number, position: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let at = 0;
  while (at < length) {
    const n = fs.readSync(fd, bytes, at, Math.min(length - at, 1 << 30), position + at);
    if (n === 0) break; // the file shrank while we read it: the caller reports the truncation
    at += n;
  }
  return at === length ? bytes : bytes.subarray(0, at);
}

/** Runs `fn` on the open regular file `path`, closing it afterwards; I/O errors name the file. */
export function withFile<T>(path: string, fn: (fd: number, size: number) => T): T {
  const { fd, size } = openFile(path);
  try {
    return fn(fd, size);
  } catch (err) {
    throw systemError(err) ? readError(path, err) : err;
  } finally {
    fs.closeSync(fd);
  }
}

/** A whole regular file's bytes. */
export function readFileBytes(path: string): Uint8Array {
  return withFile(path, (fd, size) => readAt(fd, 0, size));
}

/** A whole regular text file as strict UTF-8, without a leading byte order mark (some Windows editors add one). */
export function readTextFile(path: string): string {
  const bytes = withFile(path, (fd, size) => {
    if (size > constants.MAX_STRING_LENGTH) {
      throw new Error(
        `${path}: cannot read: it is ${size} bytes, more than one string can hold (${constants.MAX_STRING_LENGTH}); split it into smaller files`,
      );
    }
    return readAt(fd, 0, size);
  });
  return decodeTextFile(bytes, path);
}
