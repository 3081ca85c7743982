/**
 * The kill -9 soak of `lora train`: a small run with a checkpoint every step or two (older ones
 * pruned), killed with SIGKILL again and again and resumed each time with `lora train --resume`, then
 * compared with the same run left alone. Kills come two ways:
 *   - at a random moment (a timer in this process): mostly mid-step, sometimes mid-write;
 *   - at a named fault point of the writer (src/io/node/faults.ts, LORA_KILL_AT=point:n: the process
 *     SIGKILLs itself there): mid-checkpoint, just before its rename, mid-pruning, between a metrics
 *     row and its checkpoint, while the final adapter is written.
 * After every kill every checkpoint folder present must be complete, load, and hold the bytes of the
 * uninterrupted run's checkpoint of that step. At the end the adapter must be byte-identical to the
 * uninterrupted run's, metrics.jsonl must hold each step (and each evaluation) exactly once with the
 * same losses, and no temporary file may be left. Used by `npm run soak` (soak.ts) and, with 3 kills,
 * by test/cli/soak.test.ts.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseCheckpoint } from "../../src/io/checkpoint.js";
import { readSafetensorsFile } from "../../src/io/node/safetensors-file.js";
import { Rng } from "../../src/tensor/random.js";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const CLI = join(repoRoot, "dist/src/cli/main.js");
export const SOAK_MODEL = join(repoRoot, "test/fixtures/models/llama_gqa_tied");

/** The writer's fault points a targeted kill may pick, with the most hits one process reaches there. */
export const KILL_POINTS = ["checkpoint-file", "checkpoint-rename", "prune", "metrics", "outputs"] as const;
export type KillPoint = (typeof KILL_POINTS)[number];
/** A kill at a random moment, or at a fault point (its n-th hit: given, or drawn from the next few). */
export type Kill = { kind: "random" } | { kind: "point"; point: KillPoint; n?: number };

export interface SoakOptions {
  /** A fresh folder for the runs. */
  workDir: string;
  /** The kills, in order (see planKills). */
  kills: Kill[];
  seed: number;
  steps: number;
  saveEvery: number;
  keep: number;
  /** The soak stops (and fails) past this many milliseconds. */
  timeLimitMs: number;
  log?: (line: string) => void;
}

export interface SoakReport {
  /** Kills made (a random one that came after the process had finished is not counted). */
  kills: number;
  /** Each kill by the phase it hit: a fault point, or what the folder showed after a random one. */
  phases: Record<string, number>;
  /** Random kills whose run had finished first: the run was then started again from nothing. */
  missed: number;
  /** Resumes that found no checkpoint and started the run again with --overwrite. */
  restarts: number;
  /** Checkpoint folders inspected after the kills (each complete, loadable, and the reference's bytes). */
  checkpointsChecked: number;
  /** Temporary entries found after kills (all removed by the resumes, checked at the end). */
  leftovers: number;
  /** Every difference found; empty when the soak passed. */
  problems: string[];
  identical: boolean;
  seconds: number;
  referenceSeconds: number;
}

/** `n` kills: about half at random moments, the rest spread over the fault points ("outputs" last). */
export function planKills(n: number, rng: Rng): Kill[] {
  const points: KillPoint[] = ["checkpoint-file", "prune", "checkpoint-rename", "metrics"];
  const targeted = Math.floor(n / 2);
  // with 5 or more targeted kills, the last is at the final adapter's write (the run's very end)
  const end: Kill[] = targeted >= 5 ? [{ kind: "point", point: "outputs" }] : [];
  const kills: Kill[] = [];
  for (let i = 0; i < targeted - end.length; i++)
    kills.push({ kind: "point", point: points[i % points.length]! });
  while (kills.length < n - end.length) kills.push({ kind: "random" });
  for (let i = kills.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [kills[i], kills[j]] = [kills[j]!, kills[i]!];
  }
  return [...kills, ...end];
}

/** A learnable dataset over ids the tiny fixtures' vocabularies hold, with a validation split. */
function writeData(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const row = (i: number) => ({
    input_ids: Array.from({ length: 16 + (i % 5) }, (_, t) => (5 * i + 3 * t) % 60),
  });
  const jsonl = (rows: unknown[]) => rows.map((r) => `${JSON.stringify(r)}\n`).join("");
  fs.writeFileSync(join(dir, "train.jsonl"), jsonl(Array.from({ length: 32 }, (_, i) => row(i))));
  fs.writeFileSync(join(dir, "valid.jsonl"), jsonl(Array.from({ length: 4 }, (_, i) => row(100 + i))));
}

interface Child {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  err: string;
  ms: number;
}

/** Runs `lora ...args`; with `killAfterMs`, SIGKILLs it then (unless it has finished). */
function runLora(args: string[], env: Record<string, string>, killAfterMs?: number): Promise<Child> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const timer = killAfterMs === undefined ? null : setTimeout(() => child.kill("SIGKILL"), killAfterMs);
  return new Promise((done) =>
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      done({ code, signal, out, err, ms: performance.now() - t0 });
    }),
  );
}

const CHECKPOINT_FILES = [
  "adapter_config.json",
  "adapter_model.safetensors",
  "optimizer.safetensors",
  "trainer_state.json",
];
const ATOMIC_TEMP = /\.tmp-\d+-[0-9a-f]+$/;

/** What a random kill hit, read from what it left in the run folder (or an --overwrite run's staging folder). */
function phaseOf(run: string, keep: number, resumedFrom: number): string {
  const staged = fs.readdirSync(dirname(run)).find((n) => n.startsWith(".run.lora-new-"));
  if (staged) return phaseOf(join(dirname(run), staged), keep, 0);
  const ckpt = join(run, "checkpoints");
  const names = fs.existsSync(ckpt) ? fs.readdirSync(ckpt) : [];
  if (names.some((n) => n.startsWith(".tmp-step-") || n.startsWith(".tmp-replaced-")))
    return "checkpoint write";
  if (names.some((n) => n.startsWith(".tmp-pruned-"))) return "pruning";
  if (names.filter((n) => /^step-\d+$/.test(n)).length > keep) return "pruning";
  const temp = fs.existsSync(run) ? fs.readdirSync(run).find((n) => ATOMIC_TEMP.test(n)) : undefined;
  if (temp) return `writing ${temp.replace(ATOMIC_TEMP, "")}`;
  if (fs.existsSync(join(run, "adapter_model.safetensors"))) return "after the outputs";
  const steps = metricRows(run).filter((r) => r.loss !== undefined);
  if (steps.length === 0 || Math.max(...steps.map((r) => r.step as number)) <= resumedFrom)
    return "start-up (loading, before the first step)";
  return "step";
}

function metricRows(run: string): Record<string, unknown>[] {
  const path = join(run, "metrics.jsonl");
  if (!fs.existsSync(path)) return [];
  return fs
    .readFileSync(path, "utf8")
    .split("\n")
    .flatMap((l) => {
      try {
        return l ? [JSON.parse(l) as Record<string, unknown>] : [];
      } catch {
        return [];
      }
    });
}

function newestStep(run: string): number | null {
  const ckpt = join(run, "checkpoints");
  if (!fs.existsSync(ckpt)) return null;
  const steps = fs
    .readdirSync(ckpt)
    .flatMap((n) => (/^step-(\d+)$/.exec(n) ? [Number(n.slice(5))] : []))
    .filter((s) => fs.existsSync(join(ckpt, `step-${s}`, "trainer_state.json")));
  return steps.length ? Math.max(...steps) : null;
}

const same = (a: string, b: string) => fs.readFileSync(a).equals(fs.readFileSync(b));

/**
 * Every checkpoint folder in `run` (temporary ones aside): its four files present, trainer_state.json
 * and optimizer.safetensors parse as a checkpoint, the adapter reads, and the weights and optimizer
 * state are the bytes of the reference run's checkpoint of the same step. Returns how many it checked.
 */
function inspectCheckpoints(run: string, reference: string, problems: string[], when: string): number {
  const ckpt = join(run, "checkpoints");
  if (!fs.existsSync(ckpt)) return 0;
  let n = 0;
  for (const name of fs.readdirSync(ckpt)) {
    if (name.startsWith(".tmp-")) continue;
    const dir = join(ckpt, name);
    n++;
    if (!/^step-\d+$/.test(name)) {
      problems.push(`${when}: unexpected entry ${dir}`);
      continue;
    }
    const missing = CHECKPOINT_FILES.filter((f) => !fs.existsSync(join(dir, f)));
    if (missing.length > 0) {
      problems.push(`${when}: ${dir} is half-written: no ${missing.join(", ")}`);
      continue;
    }
    try {
      const state = parseCheckpoint(
        JSON.parse(fs.readFileSync(join(dir, "trainer_state.json"), "utf8")),
        readSafetensorsFile(join(dir, "optimizer.safetensors")),
        dir,
      );
      readSafetensorsFile(join(dir, "adapter_model.safetensors"));
      JSON.parse(fs.readFileSync(join(dir, "adapter_config.json"), "utf8"));
      if (`step-${state.step}` !== name) problems.push(`${when}: ${dir} holds step ${state.step}`);
    } catch (e) {
      problems.push(`${when}: ${dir} does not load: ${(e as Error).message}`);
      continue;
    }
    for (const f of ["adapter_model.safetensors", "optimizer.safetensors", "adapter_config.json"]) {
      const ref = join(reference, "checkpoints", name, f);
      if (!fs.existsSync(ref)) problems.push(`${when}: the reference run has no ${name}`);
      else if (!same(join(dir, f), ref)) problems.push(`${when}: ${name}/${f} differs from the reference`);
    }
  }
  return n;
}

/** Temporary entries in a run folder and its checkpoints. */
function leftovers(run: string): string[] {
  const ckpt = join(run, "checkpoints");
  return [
    ...(fs.existsSync(run) ? fs.readdirSync(run).filter((n) => ATOMIC_TEMP.test(n)) : []),
    ...(fs.existsSync(ckpt) ? fs.readdirSync(ckpt).filter((n) => n.startsWith(".tmp-")) : []),
  ];
}

export async function soak(o: SoakOptions): Promise<SoakReport> {
  const t0 = performance.now();
  const log = o.log ?? (() => {});
  const rng = new Rng(o.seed);
  const data = join(o.workDir, "data");
  writeData(data);
  const reference = join(o.workDir, "reference");
  const run = join(o.workDir, "run");
  const settings = [
    ...[
      "--model",
      SOAK_MODEL,
      "--data",
      data,
      "--steps",
      String(o.steps),
      "--save-every",
      String(o.saveEvery),
    ],
    ...["--lr", "1e-2", "--dropout", "0.1", "--schedule", "cosine", "--warmup", "3", "--batch-size", "3"],
    ...["--eval-every", "3", "--seed", String(o.seed % 1000)],
  ];
  const problems: string[] = [];

  // the reference: the same run, never killed, every checkpoint kept
  const ref = await runLora(["train", ...settings, "--out", reference, "--keep", "0"], {});
  if (ref.code !== 0) throw new Error(`the reference run failed: ${ref.err}`);
  // its time in steps (evaluations and checkpoints included), as `lora train` reports it; the rest is start-up
  const inSteps =
    Number(/([\d.]+) s with evaluation and checkpoints/.exec(ref.out)?.[1] ?? ref.ms / 2000) * 1000;
  const stepMs = inSteps / o.steps;
  const startMs = Math.max(0, ref.ms - inSteps);
  log(
    `reference run: ${o.steps} steps in ${(ref.ms / 1000).toFixed(1)} s (start-up ${(startMs / 1000).toFixed(1)} s, ${stepMs.toFixed(0)} ms a step)`,
  );

  const fresh = (overwrite: boolean) => [
    "train",
    ...settings,
    "--out",
    run,
    "--keep",
    String(o.keep),
    ...(overwrite ? ["--overwrite"] : []),
  ];
  const phases: Record<string, number> = {};
  let kills = 0;
  let missed = 0;
  let restarts = 0;
  let checked = 0;
  let left = 0;
  let started = false;
  const hitCounts = { "checkpoint-file": 4, "checkpoint-rename": 1, prune: 1, metrics: 1, outputs: 2 };

  /** The command that continues the run: a resume, or a new start when there is nothing to resume. */
  const next = (): string[] => {
    if (!started) {
      started = true;
      return fresh(false);
    }
    if (newestStep(run) !== null) return ["train", "--resume", run];
    restarts++;
    return fresh(true);
  };

  for (let i = 0; i < o.kills.length; ) {
    if (performance.now() - t0 > o.timeLimitMs) {
      problems.push(`the time limit (${o.timeLimitMs / 1000} s) ran out after ${kills} kill(s)`);
      break;
    }
    const kill = o.kills[i]!;
    const from = newestStep(run) ?? 0;
    const remaining = o.steps - from;
    let env: Record<string, string> = {};
    let after: number | undefined;
    if (kill.kind === "point") {
      // hits within the next few checkpoints: the n-th of this process at that point
      const per = kill.point === "outputs" ? 1 : kill.point === "metrics" ? o.saveEvery : 1;
      const room = Math.max(1, Math.min(3, Math.floor(remaining / o.saveEvery) - 1));
      const n =
        kill.n ??
        (kill.point === "outputs" ? 1 + rng.int(2) : 1 + rng.int(room * per * hitCounts[kill.point]));
      env = { LORA_KILL_AT: `${kill.point}:${n}` };
    } else {
      // a random moment in the next few steps (from near the end of start-up)
      after = 0.9 * startMs + rng.uniform() * stepMs * Math.min(remaining - 1, 6 * o.saveEvery);
    }
    const args = next();
    const r = await runLora(args, env, after);
    if (r.signal !== "SIGKILL") {
      if (r.code !== 0) {
        problems.push(`${args.join(" ")} failed (exit ${r.code}): ${r.err.trim()}`);
        break;
      }
      // the run finished before the kill: start it again from nothing and kill that one instead
      missed++;
      fs.rmSync(run, { recursive: true });
      started = false;
      log(
        `kill ${i + 1} (${kill.kind === "point" ? kill.point : "random"}) came after the run had finished; starting again`,
      );
      continue;
    }
    kills++;
    i++;
    const phase = kill.kind === "point" ? `at ${kill.point}` : `random: ${phaseOf(run, o.keep, from)}`;
    phases[phase] = (phases[phase] ?? 0) + 1;
    checked += inspectCheckpoints(run, reference, problems, `after kill ${kills} (${phase})`);
    left += leftovers(run).length;
    log(`kill ${kills}/${o.kills.length}: ${phase}; newest checkpoint step ${newestStep(run) ?? "none"}`);
  }

  // the last resume runs to the end
  const last = await runLora(next(), {});
  if (last.code !== 0) problems.push(`the final resume failed (exit ${last.code}): ${last.err.trim()}`);
  checked += inspectCheckpoints(run, reference, problems, "at the end");
  for (const f of ["adapter_model.safetensors", "adapter_config.json"]) {
    if (!fs.existsSync(join(run, f))) problems.push(`the run has no ${f}`);
    else if (!same(join(run, f), join(reference, f)))
      problems.push(`${f} differs from the uninterrupted run's`);
  }
  const rest = leftovers(run);
  if (rest.length > 0) problems.push(`temporary files left: ${rest.join(", ")}`);
  const staging = fs.readdirSync(o.workDir).filter((n) => n.startsWith(".run.lora-"));
  if (staging.length > 0) problems.push(`staging folders left: ${staging.join(", ")}`);
  problems.push(...compareMetrics(metricRows(run), metricRows(reference), o.steps));

  return {
    kills,
    phases,
    missed,
    restarts,
    checkpointsChecked: checked,
    leftovers: left,
    problems,
    identical: problems.length === 0,
    seconds: (performance.now() - t0) / 1000,
    referenceSeconds: ref.ms / 1000,
  };
}

/** Each step's row and each evaluation's exactly once, with the reference run's values. */
export function compareMetrics(
  rows: Record<string, unknown>[],
  reference: Record<string, unknown>[],
  steps: number,
): string[] {
  const problems: string[] = [];
  const key = (r: Record<string, unknown>) => `${r.loss !== undefined ? "step" : "eval"} ${r.step}`;
  const seen = new Map<string, number>();
  for (const r of rows) seen.set(key(r), (seen.get(key(r)) ?? 0) + 1);
  for (const [k, n] of seen) if (n !== 1) problems.push(`metrics.jsonl has ${k} ${n} times`);
  for (let s = 1; s <= steps; s++) if (!seen.has(`step ${s}`)) problems.push(`metrics.jsonl lacks step ${s}`);
  const byKey = new Map(rows.map((r) => [key(r), r]));
  for (const r of reference) {
    const got = byKey.get(key(r));
    if (!got) problems.push(`metrics.jsonl lacks ${key(r)}`);
    else if (got.loss !== r.loss || got.val_loss !== r.val_loss || got.grad_norm !== r.grad_norm)
      problems.push(`metrics.jsonl ${key(r)} differs from the uninterrupted run's`);
  }
  if (rows.length !== reference.length)
    problems.push(`metrics.jsonl has ${rows.length} rows, the uninterrupted run's ${reference.length}`);
  return problems;
}
