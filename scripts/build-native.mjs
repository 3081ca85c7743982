#!/usr/bin/env node
// Builds the native addon (native/) with node-gyp at `npm install`. It never fails the install: without a
// compiler, or offline without Node's headers, the wasm backend is used, and native/build-status.json
// records why, for `lora doctor`. LORA_NATIVE_BUILD=0 skips the build.
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const statusFile = join(root, "native", "build-status.json");
const record = (ok, reason) => {
  try {
    writeFileSync(statusFile, `${JSON.stringify({ ok, reason, node: process.version })}\n`);
  } catch {} // a read-only install folder: the status is advice, never a reason to fail the install
};

/** node-gyp: the one npm runs scripts with, else npm's bundled copy, else a `node-gyp` on PATH. */
function nodeGyp() {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) {
    return [process.execPath, process.env.npm_config_node_gyp];
  }
  try {
    const npmCli = process.env.npm_execpath;
    if (npmCli) return [process.execPath, createRequire(npmCli).resolve("node-gyp/bin/node-gyp.js")];
  } catch {}
  return ["node-gyp"];
}

if (process.env.LORA_NATIVE_BUILD === "0") {
  record(false, "skipped (LORA_NATIVE_BUILD=0)");
  process.exit(0);
}
const [cmd, ...pre] = nodeGyp();
const args = [...pre, "rebuild", "--directory", join(root, "native")];
// offline machines: build against the headers of the running Node when they are installed
if (!process.env.npm_config_nodedir && existsSync("/usr/include/node/node_api.h"))
  args.push("--nodedir=/usr");
const started = Date.now();
const r = spawnSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
if (r.status === 0) {
  record(true);
  console.log(`lora: native addon built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} else {
  const log = `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? String(r.error) : ""}`;
  const line = log.split("\n").find((l) => /error|not found|ENOENT|gyp ERR/i.test(l)) ?? "node-gyp failed";
  record(false, line.trim().slice(0, 300));
  console.warn(
    `lora: native addon not built (${line.trim().slice(0, 200)}); the WebAssembly backend will be used.`,
  );
}
