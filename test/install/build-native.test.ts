/** `npm install` never fails on the native addon: without a working compiler it records why and exits 0. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { repoRoot } from "../helpers.js";

it("a failing C++ compiler leaves the install working and says why in native/build-status.json", () => {
  const dir = mkdtempSync(join(tmpdir(), "lora-native-"));
  try {
    cpSync(join(repoRoot, "native", "src"), join(dir, "native", "src"), { recursive: true });
    cpSync(join(repoRoot, "native", "binding.gyp"), join(dir, "native", "binding.gyp"));
    cpSync(join(repoRoot, "scripts", "build-native.mjs"), join(dir, "scripts", "build-native.mjs"));
    const r = spawnSync(process.execPath, [join(dir, "scripts", "build-native.mjs")], {
      encoding: "utf8",
      env: { ...process.env, CXX: "/bin/false", CC: "/bin/false" },
      timeout: 120_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /native addon not built .*WebAssembly backend will be used/);
    const status = JSON.parse(readFileSync(join(dir, "native", "build-status.json"), "utf8"));
    assert.equal(status.ok, false);
    assert.ok(status.reason.length > 0);
    assert.ok(!existsSync(join(dir, "native", "build", "Release", "lora_native.node")));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
