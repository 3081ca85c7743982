/** Node file layer for GGUF: the header read header-first (only the bytes it spans), then each tensor's bytes. */
import { GGUFError, type GGUFHeader, type GGUFTensorInfo, isGGUF, parseGGUFHeader } from "../gguf.js";
import { readAt, withFile } from "./read-file.js";

export interface GGUFFileHeader extends GGUFHeader {
  path: string;
}

/** Reads and checks a GGUF file's header (metadata and tensor table), reading no tensor data. */
export function readGGUFHeader(path: string): GGUFFileHeader {
  return withFile(path, (fd, size) => ({
    path,
    ...parseGGUFHeader({ size, read: (offset, length) => readAt(fd, offset, length) }, path),
  }));
}

/**
 * Reads the bytes of the named tensors (all when `names` is absent), one buffer per tensor, in the
 * order `names` gives. Refuses a file that changed since its header was read.
 */
export function readGGUFTensorData(header: GGUFFileHeader, names?: string[]): Map<string, Uint8Array> {
  const byName = new Map(header.tensors.map((t) => [t.name, t]));
  const wanted: GGUFTensorInfo[] = names
    ? names.map((n) => {
        const t = byName.get(n);
        if (!t) throw new GGUFError(header.path, `it has no tensor ${JSON.stringify(n)}`);
        return t;
      })
    : header.tensors;
  return withFile(header.path, (fd, size) => {
    const changed = () =>
      new GGUFError(
        header.path,
        `the file changed (${header.size} -> ${size} bytes) after its header was read; retry once nothing writes it`,
      );
    if (size !== header.size) throw changed();
    const out = new Map<string, Uint8Array>();
    for (const t of wanted) {
      const bytes = readAt(fd, t.offset, t.bytes);
      if (bytes.length < t.bytes) throw changed();
      out.set(t.name, bytes);
    }
    return out;
  });
}

/** Whether `path` is a regular file that starts with the GGUF magic (false for folders and unreadable paths). */
export function isGGUFFile(path: string): boolean {
  try {
    return withFile(path, (fd) => isGGUF(readAt(fd, 0, 4)));
  } catch {
    return false;
  }
}
