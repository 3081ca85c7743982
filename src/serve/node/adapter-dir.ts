/**
 * Run-time adapter loading, confined to --adapter-dir: a client's lora_path (relative to the folder,
 * or absolute) is resolved with realpath, and it and the two files read from it must lie inside the
 * folder's own realpath. So `..` traversal, a symlink that points out (the folder or either file) and
 * an absolute path elsewhere are all refused before anything is read.
 */
import { existsSync, readdirSync, realpathSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { readAdapterInput } from "../../io/node/adapter-folder.js";
import { isInside } from "../../io/node/inside-folder.js";
import type { AdapterInput } from "../../io/peft.js";
import { ApiError } from "../errors.js";

const inside = isInside;

/** A reader of adapters under `dir`, for ApiOptions.readAdapter. */
export function adapterDirReader(
  dir: string,
  defaultTargets: string[],
): (path: string) => { adapter: AdapterInput; root: string } {
  if (!existsSync(dir))
    throw new Error(
      `--adapter-dir ${dir}: no such folder; create it, or point to the folder that holds your adapters`,
    );
  const root = realpathSync(dir);
  const refuse = (path: string, why: string) =>
    new ApiError(
      400,
      `lora_path "${path}" ${why}; adapters load only from inside the server's --adapter-dir`,
      "invalid_request_error",
      "lora_path",
    );
  return (path: string) => {
    if (path.includes("\0")) throw refuse(path, "holds a NUL character");
    const asked = resolve(root, path);
    if (!inside(root, asked)) throw refuse(path, "is outside the adapter folder");
    if (!existsSync(asked))
      throw new ApiError(404, `lora_path "${path}": no such adapter folder`, "not_found_error", "lora_path");
    const real = realpathSync(asked);
    if (!inside(root, real)) throw refuse(path, "leads (through a symbolic link) outside the adapter folder");
    // every file of the folder, whichever format reads it (PEFT, mlx-lm), must stay inside too
    const files = statSync(real).isDirectory() ? readdirSync(real) : [];
    for (const f of files) {
      const p = join(real, f);
      if (!inside(root, realpathSync(p))) throw refuse(path, `has ${f} linking outside the adapter folder`);
    }
    try {
      return { adapter: readAdapterInput(real, { defaultTargets }), root: relative(root, real) || "." };
    } catch (e) {
      throw new ApiError(400, (e as Error).message, "invalid_request_error", "lora_path");
    }
  };
}
