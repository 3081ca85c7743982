/**
 * The native kernels built for ARM64 and run under emulation: native/test/gemm_check.cc (GEMM against a
 * double-precision triple loop: every transpose, 16-bit weights, edge tiles, 1 vs 2 threads bit-identical;
 * a few element-wise kernels) cross-compiled from native/src by aarch64-linux-gnu-g++ and run under
 * qemu-aarch64-static at each arm64 level (neon, generic). Correctness only: timing under qemu means
 * nothing. Skipped, saying so, where the cross compiler or qemu is absent (Debian:
 * `apt-get install g++-aarch64-linux-gnu qemu-user-static`). The same program built for this machine runs
 * at each level it supports, as a cheap second check of the x86 kernels outside Node.
 * Binaries are cached in the OS temp folder under a hash of the sources and flags: only a changed
 * kernel rebuilds (about a minute on 2 cores), a rerun takes seconds.
 */
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { repoRoot } from "../helpers.js";

const run = promisify(execFile);
const SOURCES = [
  "native/test/gemm_check.cc",
  "native/src/gemm.cc",
  "native/src/pool.cc",
  "native/src/ops.cc",
  "native/src/attention.cc",
];
const HEADERS = ["gemm.h", "half.h", "ops.h", "pool.h", "simd.h"].map((h) => `native/src/${h}`);
const FLAGS = [
  "-O2",
  "-std=c++17",
  "-fno-math-errno",
  "-fno-trapping-math",
  "-fopenmp-simd",
  "-pthread",
  "-Wall",
  "-Wno-unused-function",
];

/** The first of `names` that runs (`name --version` exits 0), or null. */
function tool(...names: string[]): string | null {
  for (const n of names) if (spawnSync(n, ["--version"], { stdio: "ignore" }).status === 0) return n;
  return null;
}

/** Builds gemm_check with `cxx` (cached by a hash of compiler, flags and sources); its path. Each source
 *  compiles in its own process, all at once, then one link: the sources build side by side. */
async function build(cxx: string, linkFlags: string[]): Promise<string> {
  const h = createHash("sha256").update(`${cxx} ${[...FLAGS, ...linkFlags].join(" ")}`);
  for (const f of [...SOURCES, ...HEADERS]) h.update(f).update(readFileSync(join(repoRoot, f)));
  const dir = join(tmpdir(), "lora-gemm-check");
  const out = join(dir, `${cxx}-${h.digest("hex").slice(0, 16)}`);
  if (existsSync(out)) return out;
  const work = `${out}.${process.pid}.d`;
  mkdirSync(work, { recursive: true });
  const objects = SOURCES.map((_, i) => join(work, `${i}.o`));
  const opts = { maxBuffer: 1 << 24 };
  await Promise.all(
    SOURCES.map((f, i) => run(cxx, [...FLAGS, "-c", join(repoRoot, f), "-o", objects[i]!], opts)),
  );
  await run(cxx, [...FLAGS, ...linkFlags, ...objects, "-o", join(work, "gemm_check")], opts);
  renameSync(join(work, "gemm_check"), out); // whole or not at all: a build cut short never passes for a cached one
  rmSync(work, { recursive: true, force: true });
  return out;
}

/** Runs the program (under `emulator`, with its arguments, when given) with LORA_ISA = level; exit code
 *  and output. */
function check(bin: string, level: string, emulator?: string[]): Promise<{ code: number; out: string }> {
  const [cmd, args] = emulator ? [emulator[0]!, [...emulator.slice(1), bin]] : [bin, []];
  return new Promise((done) => {
    execFile(cmd, args, { env: { ...process.env, LORA_ISA: level } }, (e, stdout, stderr) => {
      const code = e ? (typeof e.code === "number" ? e.code : -1) : 0;
      done({ code, out: `${stdout}${stderr}${e && code === -1 ? String(e) : ""}` });
    });
  });
}

const cross = tool("aarch64-linux-gnu-g++");
const qemu = tool("qemu-aarch64-static", "qemu-aarch64");
const skipArm =
  (!cross || !qemu) &&
  `needs aarch64-linux-gnu-g++ and qemu-aarch64-static (missing: ${[!cross && "the cross compiler", !qemu && "qemu"].filter(Boolean).join(", ")}); on Debian: apt-get install g++-aarch64-linux-gnu qemu-user-static`;

const host = process.arch === "x64" || process.arch === "arm64" ? tool("g++", "c++") : null;
// both builds start at once (2 cores); a failed one fails the tests that await it
const armBuild = skipArm ? null : build(cross!, ["-static"]);
const hostBuild = host ? build(host, []) : null;
for (const b of [armBuild, hostBuild]) b?.catch(() => {});
const armBin = () => armBuild!;

describe("native kernels on arm64, under qemu", { skip: skipArm, timeout: 600_000 }, () => {
  // the levels run side by side (qemu is single-threaded per guest thread; the machine has 2 cores)
  const runs = new Map<string, ReturnType<typeof check>>();
  const armRun = async (level: string) => {
    const bin = await armBin();
    // qemu emulates a Cortex-A53, an ARMv8.0 core: an instruction newer than the baseline every arm64
    // CPU has (Apple M-series and Graviton have more) would fault here
    if (!runs.size)
      for (const l of ["neon", "generic", "avx2"]) runs.set(l, check(bin, l, [qemu!, "-cpu", "cortex-a53"]));
    return runs.get(level)!;
  };
  for (const level of ["neon", "generic"]) {
    it(`LORA_ISA=${level}: GEMM (every transpose, f32/bf16/f16 weights, edge tiles) matches double; 1 and 2 threads give the same bits`, async () => {
      const r = await armRun(level);
      assert.equal(r.code, 0, r.out.slice(-4000));
      assert.match(r.out, new RegExp(`^isa ${level}$`, "m"));
      assert.match(r.out, /^supported neon generic$/m);
      assert.match(r.out, /^ok \d+ checks$/m);
    });
  }

  it("an x86 level is refused on arm64, naming the arm64 levels", async () => {
    const r = await armRun("avx2");
    assert.equal(r.code, 2, r.out);
    assert.match(
      r.out,
      /refused: LORA_ISA=avx2: not a level \(neon, generic\); this CPU runs neon or generic/,
    );
  });
});

describe("native kernels outside Node, built for this machine", {
  skip: !host && "no C++ compiler (g++ or c++) on PATH",
  timeout: 600_000,
}, () => {
  it("every level this CPU runs passes gemm_check", async () => {
    const bin = await hostBuild!;
    const levels = /^supported (.*)$/m.exec((await check(bin, "")).out)?.[1]?.split(" ") ?? [];
    assert.ok(levels.includes("generic"), `no supported levels printed by ${bin}`);
    for (const level of levels) {
      const r = await check(bin, level);
      assert.equal(r.code, 0, `LORA_ISA=${level}:\n${r.out.slice(-4000)}`);
      assert.match(r.out, new RegExp(`^isa ${level}$`, "m"));
      assert.match(r.out, /^ok \d+ checks$/m);
    }
  });
});
