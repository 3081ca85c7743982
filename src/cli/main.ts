#!/usr/bin/env node
/** The `lora` command line: dispatches to subcommands, and turns errors into one-line messages. */
import { readFileSync } from "node:fs";
import { parseMemorySize } from "../io/memory.js";
import { setMaxMemory } from "../io/node/memory.js";
import { availableBackends, backend, setBackend } from "../kernels/index.js";
// registers the native and worker-thread wasm backends (LORA_THREADS sets their size)
import {
  getThreads,
  nativeBf16Speedup,
  nativeIsa,
  nativeIsaInfo,
  nativeStatus,
  setThreads,
} from "../kernels/node/index.js";
import { type Command, helpText, num, parseFlags, str, UsageError } from "./command.js";
import { evalCommand } from "./eval.js";
import { experimentCommand } from "./experiment.js";
import { exportCommand } from "./export.js";
import { generateCommand } from "./generate.js";
import { inspectCommand } from "./inspect.js";
import { mergeCommand } from "./merge.js";
import { paramsCommand } from "./params.js";
import { plotCommand } from "./plot.js";
import { scaleOutCommand } from "./scale-out.js";
import { serveCommand } from "./serve.js";
import { trainCommand } from "./train.js";

const COMMANDS: Command[] = [
  trainCommand,
  evalCommand,
  generateCommand,
  mergeCommand,
  exportCommand,
  inspectCommand,
  paramsCommand,
  plotCommand,
  experimentCommand,
  serveCommand,
  scaleOutCommand,
];

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

function mainHelp(): string {
  const width = Math.max(...[...COMMANDS.map((c) => c.name), "doctor"].map((n) => n.length)) + 2;
  return `lora ${version()}: LoRA fine-tuning for Hugging Face transformer models, in TypeScript.

Usage: lora <command> [options]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`).join("\n")}
  ${"doctor".padEnd(width)}Say which kernels run here (native / wasm / ref), on which CPU features, and why.

Run 'lora <command> --help' for a command's options, 'lora doctor' for which kernels run here.
`;
}

/** The active backend, its threads, and why it is not native when it is not. */
function backendLine(): string {
  const name = backend().name;
  const head = `backend ${name === "native" ? `native ${nativeIsa()}` : name}, ${getThreads()} thread(s)`;
  if (name === "native") return head;
  if (process.env.LORA_BACKEND) return `${head}; LORA_BACKEND=${process.env.LORA_BACKEND}`;
  return nativeIsa() ? head : `${head}; native unavailable: ${nativeStatus()}`;
}

/** `lora doctor`: what runs the kernels here, and what to do when it is not the fastest. */
function doctor(): string {
  const isa = nativeIsaInfo();
  const speedup = nativeBf16Speedup();
  const bf16 =
    speedup == null
      ? ""
      : ` (bf16 products, timed at ${speedup.toFixed(2)}x f32 here; --base-dtype auto ${backend().fastBf16 ? "picks bf16: AMD's cores run them at twice the f32 rate" : "keeps f32: this CPU runs them at about the f32 rate"})`;
  const why = isa?.forced
    ? `forced by LORA_ISA=${isa.isa}; this CPU has ${isa.cpu}`
    : `this CPU's best; LORA_ISA=${isa?.supported.join("|")} forces a level`;
  return [
    `lora ${version()}, Node ${process.versions.node} on ${process.platform}-${process.arch}`,
    `active:    ${backendLine()}`,
    `available: ${availableBackends().join(", ")}`,
    isa ? `native:    built, ISA ${isa.isa}${bf16} (${why})` : `native:    not available: ${nativeStatus()}`,
    "choose with --backend NAME or LORA_BACKEND=NAME, threads with --threads N or LORA_THREADS=N",
  ].join("\n");
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const debug = argv.includes("--debug");
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(mainHelp());
    return 0;
  }
  if (name === "--version" || name === "-v") {
    console.log(`lora ${version()} (${backendLine()}, Node ${process.versions.node})`);
    return 0;
  }
  if (name === "doctor") {
    console.log(doctor());
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    console.error(
      `lora: unknown command "${name}"; commands: ${COMMANDS.map((c) => c.name).join(", ")}. See 'lora --help'.`,
    );
    return 2;
  }
  try {
    const values = parseFlags(cmd, rest);
    if (values.help) {
      process.stdout.write(helpText(cmd));
      return 0;
    }
    const backendName = str(values, "backend");
    if (backendName) setBackend(backendName);
    if (values.threads !== undefined) setThreads(num(values, "threads", 1, { int: true, min: 1 }));
    const maxMemory = str(values, "max-memory");
    if (maxMemory !== undefined) {
      const bytes = parseMemorySize(maxMemory);
      if (bytes === null)
        throw new UsageError(`--max-memory must be a size such as 8G or 512M, got "${maxMemory}"`);
      setMaxMemory(bytes);
    }
    await cmd.run(values);
    // a command that ended early but cleanly (lora train stopped by Ctrl-C: 130) has set its code
    return Number(process.exitCode ?? 0);
  } catch (e) {
    const err = e as Error;
    if (debug) console.error(err.stack ?? err);
    else console.error(`lora ${cmd.name}: ${err.message}`);
    // a usage or settings mistake exits 2, as a bad flag does; anything else 1
    return err.name === "UsageError" || err.name === "SettingsError" ? 2 : 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
