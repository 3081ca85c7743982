/**
 * `npm run bench:serve`: a bounded load test of `lora serve` on loopback. The server runs as the real
 * CLI in a child process, over stories260K (../shared/data; else the tiny test model) with three
 * random adapters (rank 8 on every linear layer of the blocks, or on `--targets`, written to a temporary
 * folder). Each
 * scenario sends a fixed number of greedy completions (a fixed number of tokens each, so runs are
 * comparable) and stops by itself: one at a time, then 1, 4 and 16 concurrent clients with mixed
 * adapters, then 16 clients all on the base. Prints a Markdown table: aggregate generated tokens/s,
 * p50 / p99 request latency, failures, and the server's peak resident memory (VmHWM). The two 16-client
 * scenarios, whose ratio is the cost of mixing adapters, run in alternating parts (mixed, base, base,
 * mixed, ...: `--rounds` pairs, 2 unless told), so a change in the machine's load falls on both alike;
 * the ratio of each pair is printed too, to show how much the machine moved. `--width W`: stories260K
 * widened to hidden size W with random weights (bench/serve-adapters.ts widenedModel).
 * `--targets q_proj,v_proj`: the adapters on those layers only (PEFT's default for Llama, the paper's).
 *   npm run bench:serve [-- --requests N] [--tokens N] [--rounds N] [--width W] [--targets T,...]
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { contextLength } from "../src/node.js";
import {
  BENCH_ADAPTERS as ADAPTERS,
  BENCH_TARGETS,
  benchModelDir,
  widenedModel,
  writeBenchAdapters,
} from "./serve-adapters.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const { values } = parseArgs({
  options: {
    requests: { type: "string" },
    tokens: { type: "string" },
    rounds: { type: "string" },
    width: { type: "string" },
    targets: { type: "string" },
  },
});
const REQUESTS = Number(values.requests ?? 32);
const ROUNDS = Number(values.rounds ?? 2);
if (!(Number.isInteger(ROUNDS) && ROUNDS >= 1 && ROUNDS <= REQUESTS))
  throw new Error(`--rounds ${values.rounds}: give a whole number from 1 to --requests (${REQUESTS})`);
const tmp = mkdtempSync(join(tmpdir(), "bench-serve-"));
const modelDir = values.width
  ? widenedModel(benchModelDir(root), Number(values.width), tmp)
  : benchModelDir(root);
// 48 new tokens, or fewer where the context is short (the tiny fixture's 64 positions hold about 19
// prompt tokens and 40 new ones): past it, every request is refused as context_length_exceeded
const context = contextLength(JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")));
const TOKENS = Number(values.tokens ?? Math.min(48, context - 24));
const log = (s: string) => process.stderr.write(`${s}\n`);
const TARGETS = values.targets?.split(",").map((t) => t.trim());
if (TARGETS && !TARGETS.every((t) => BENCH_TARGETS.includes(t)))
  throw new Error(`--targets ${values.targets}: give some of ${BENCH_TARGETS.join(", ")}, comma-separated`);
writeBenchAdapters(modelDir, tmp, TARGETS);

const child = spawn(
  process.execPath,
  [
    join(root, "dist/src/cli/main.js"),
    "serve",
    "--model",
    modelDir,
    ...ADAPTERS.flatMap((a) => ["--adapter", `${a}=${join(tmp, a)}`]),
    "--port",
    "0",
    "--max-batch",
    "16",
    "--max-queue",
    "256",
  ],
  { stdio: ["ignore", "pipe", "inherit"] },
);
let out = "";
child.stdout.on("data", (b) => (out += b));
// the start-up lines may arrive in separate chunks: wait for the last one (the adapters)
for (let i = 0; i < 1000 && !/adapters: .*\n/.test(out); i++) await new Promise((r) => setTimeout(r, 20));
const url = /(http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(out)?.[1];
if (!url) throw new Error(`lora serve did not start:\n${out}`);
const base = /base model: (.+)/.exec(out)![1]!.trim();

interface Result {
  latencies: number[];
  tokens: number;
  failures: number;
  wallS: number;
  /** The server's CPU time over the scenario, seconds (NaN where /proc is not there). */
  cpuS: number;
}

/** The server's CPU time so far (user + system, /proc/PID/stat's utime and stime in 1/100 s), seconds. */
function serverCpuS(): number {
  try {
    const stat = readFileSync(`/proc/${child.pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

/** What the first failed request got, to print beside the count. */
let firstError: string | undefined;

async function one(model: string, i: number): Promise<{ ms: number; tokens: number } | null> {
  const t0 = performance.now();
  try {
    const r = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model,
        prompt: `Once upon a time ${i % 7}`,
        max_tokens: TOKENS,
        temperature: 0,
        stop: [],
      }),
    });
    if (r.status !== 200) {
      firstError ??= `HTTP ${r.status}: ${await r.text()}`;
      return null;
    }
    const body = (await r.json()) as { usage: { completion_tokens: number } };
    return { ms: performance.now() - t0, tokens: body.usage.completion_tokens };
  } catch (e) {
    firstError ??= String(e);
    return null;
  }
}

/** `requests` requests from `clients` clients, each sending its next one when the last returns. */
async function scenario(clients: number, models: string[], requests = REQUESTS): Promise<Result> {
  const latencies: number[] = [];
  let tokens = 0;
  let failures = 0;
  let next = 0;
  const t0 = performance.now();
  const cpu0 = serverCpuS();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < requests) {
        const i = next++;
        const r = await one(models[i % models.length]!, i);
        if (!r) failures++;
        else {
          latencies.push(r.ms);
          tokens += r.tokens;
        }
      }
    }),
  );
  const wallS = (performance.now() - t0) / 1000;
  return { latencies, tokens, failures, wallS, cpuS: serverCpuS() - cpu0 };
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
};

/** Two parts' results as one scenario's. */
const joined = (a: Result, b: Result): Result => ({
  latencies: [...a.latencies, ...b.latencies],
  tokens: a.tokens + b.tokens,
  failures: a.failures + b.failures,
  wallS: a.wallS + b.wallS,
  cpuS: a.cpuS + b.cpuS,
});

const mixed = [base, ...ADAPTERS];
await scenario(2, mixed); // warm-up
const rows: [string, Result][] = [];
for (const [label, clients] of [
  ["one at a time, mixed adapters", 1],
  ["4 clients, mixed adapters", 4],
] as const) {
  log(`bench:serve: ${label}...`);
  rows.push([label, await scenario(clients, mixed)]);
}
log(`bench:serve: 16 clients, mixed adapters and base only, in ${ROUNDS} alternating pairs...`);
const parts = { mixed: [] as Result[], base: [] as Result[] };
for (let r = 0; r < ROUNDS; r++) {
  // this pair's share of the requests, mixed first in even pairs and base first in odd ones
  const n = Math.floor((REQUESTS * (r + 1)) / ROUNDS) - Math.floor((REQUESTS * r) / ROUNDS);
  for (const which of r % 2 ? (["base", "mixed"] as const) : (["mixed", "base"] as const))
    parts[which].push(await scenario(16, which === "mixed" ? mixed : [base], n));
}
rows.push(
  ["16 clients, mixed adapters", parts.mixed.reduce(joined)],
  ["16 clients, base only", parts.base.reduce(joined)],
);
const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
const hwm = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
child.kill("SIGTERM");
await new Promise((r) => child.on("exit", r));
rmSync(tmp, { recursive: true, force: true });

const seq = rows[0]![1];
const tps = (r: Result) => r.tokens / r.wallS;
console.log(
  `\nlora serve, ${values.width ? `stories260K widened to ${values.width} (random weights)` : modelDir.endsWith("stories260K-hf") ? "stories260K" : "tiny test model"}, rank-8 adapters on ${TARGETS ? TARGETS.join(", ") : "every linear layer"}, ${REQUESTS} greedy requests x ${TOKENS} tokens per scenario, ${cpus()[0]?.model ?? "CPU"} (${cpus().length} cores)\n`,
);
// the server's CPU time per generated token: steadier than tokens/s where other work shares the machine
const cpuPer = (r: Result) => (r.cpuS * 1e6) / r.tokens;
console.log(
  "| scenario | tokens/s | vs one at a time | p50 latency | p99 latency | server CPU per token | failed |",
);
console.log("|---|---:|---:|---:|---:|---:|---:|");
for (const [label, r] of rows)
  console.log(
    `| ${label} | ${tps(r).toFixed(0)} | ${(tps(r) / tps(seq)).toFixed(2)}x | ${pct(r.latencies, 50).toFixed(0)} ms | ${pct(r.latencies, 99).toFixed(0)} ms | ${cpuPer(r).toFixed(0)} us | ${r.failures} |`,
  );
const [mixed16, base16] = [rows[2]![1], rows[3]![1]];
console.log(
  `\n16 clients, mixed adapters / base only: ${(tps(mixed16) / tps(base16)).toFixed(3)} (each pair: ${parts.mixed.map((m, r) => (tps(m) / tps(parts.base[r]!)).toFixed(3)).join(", ")})`,
);
console.log(
  `server CPU per token, base only / mixed adapters (16 clients): ${(cpuPer(base16) / cpuPer(mixed16)).toFixed(3)}`,
);
console.log(`server peak resident memory (VmHWM): ${hwm ? `${(Number(hwm) / 1024).toFixed(0)} MiB` : "n/a"}`);
const failed = rows.reduce((s, [, r]) => s + r.failures, 0);
if (failed > 0) {
  console.error(`bench:serve: ${failed} request(s) failed; the first: ${firstError}`);
  process.exitCode = 1;
}
