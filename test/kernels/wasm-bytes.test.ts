/** The committed wasm bytes are built from the committed kernel sources. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { it } from "node:test";
import { pathToFileURL } from "node:url";
import { sourceHash } from "../../src/kernels/wasm/bytes.js";
import { repoRoot } from "../helpers.js";

it("src/kernels/wasm/bytes.ts was generated from the current assembly/ sources", async () => {
  // the full byte-for-byte rebuild takes ~10 s, so it is `npm run check:wasm`; this checks the hash
  // of the sources, the build script and the compiler version recorded when bytes.ts was written
  const build = (await import(pathToFileURL(join(repoRoot, "scripts/build-wasm.mjs")).href)) as {
    sourceHash: () => string;
  };
  assert.equal(
    sourceHash,
    build.sourceHash(),
    "assembly/ changed since bytes.ts was built: run npm run build:wasm",
  );
});
