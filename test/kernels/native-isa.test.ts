/**
 * LORA_ISA: the native conformance suite once per ISA level this CPU runs (each in a child process with
 * LORA_ISA set, since the level is fixed when the addon loads), a refused level, and what `lora doctor`
 * says. Skipped, saying why, when the addon is absent.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import { nativeAddon, nativeStatus } from "../../src/kernels/native/node/addon.js";
import { loraWith, repoRoot } from "../helpers.js";

const addon = nativeAddon();
const skip = !addon && `native addon unavailable: ${nativeStatus()}`;
// each architecture's levels, best first (native/src/gemm.cc LEVEL_NAMES)
const LEVELS = process.arch === "arm64" ? ["neon", "generic"] : ["avx512bf16", "avx512", "avx2", "generic"];

/** node with LORA_ISA set; NODE_TEST_CONTEXT removed so a child `node:test` run reports on its own */
function nodeWith(isa: string, args: string[]) {
  const env: Record<string, string | undefined> = { ...process.env, LORA_ISA: isa };
  delete env.NODE_TEST_CONTEXT;
  const r = spawnSync(process.execPath, args, { env, encoding: "utf8", cwd: repoRoot });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe("native kernels at every ISA level this CPU runs (LORA_ISA)", { skip }, () => {
  const supported = addon ? addon.info().supported : [];
  for (const level of supported) {
    it(`${level}: the native conformance suite passes, at 1 and 2 threads`, () => {
      const r = nodeWith(level, [join(repoRoot, "dist/test/kernels/native.test.js")]);
      assert.equal(r.code, 0, `LORA_ISA=${level}:\n${r.out.slice(-4000)}\n${r.err.slice(-2000)}`);
      assert.match(r.out, /# fail 0/);
      assert.match(r.out, new RegExp(`runs at the level LORA_ISA forces \\(${level}\\)`));
    });
  }

  it("a level this CPU lacks (or no level) is refused, saying what the CPU has", () => {
    const best = addon!.info().cpu;
    const above = LEVELS.slice(0, LEVELS.indexOf(best))[0];
    const ask = above ?? "avx1024";
    const r = nodeWith(ask, [
      "--input-type=module",
      "-e",
      `await import(${JSON.stringify(join(repoRoot, "dist/src/node.js"))})`,
    ]);
    assert.notEqual(r.code, 0);
    const want = above
      ? `LORA_ISA=${ask}: this CPU has ${best} only; use ${addon!
          .info()
          .supported.join(", ")
          .replace(/, (\w+)$/, " or $1")}`
      : `LORA_ISA=${ask}: not a level`;
    assert.ok(r.err.includes(want), r.err);
  });

  it("lora doctor prints the level in use and whether LORA_ISA forced it", () => {
    const info = addon!.info();
    const plain = loraWith({ LORA_ISA: "" }, "doctor").out;
    assert.match(plain, new RegExp(`native: {4}built, ISA ${info.cpu}.*this CPU's best`));
    const forced = loraWith({ LORA_ISA: "generic" }, "doctor").out;
    assert.match(
      forced,
      new RegExp(`ISA generic \\(forced by LORA_ISA=generic; this CPU has ${info.cpu}\\)`),
    );
  });
});
