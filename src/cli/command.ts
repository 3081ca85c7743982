/** A subcommand: its flags (parsed with node:util parseArgs), generated --help, and its run function. */
import { parseArgs } from "node:util";
import { checkedNumber, type NumberBounds } from "../train/settings.js";

export interface Flag {
  type: "string" | "boolean";
  description: string;
  /** Shown in help as --flag <valueName>. */
  valueName?: string;
  multiple?: boolean;
  short?: string;
}

export interface Command {
  name: string;
  summary: string;
  usage: string;
  flags: Record<string, Flag>;
  examples?: string[];
  /**
   * Arguments that are not flags (`lora plot RUN_DIR...`, `lora inspect PATH`), given to run as
   * `values._`, between min and max of them; a command without this takes none.
   */
  positionals?: { valueName: string; min: number; max?: number };
  run(values: Values): Promise<void> | void;
}

export type Values = Record<string, string | boolean | string[] | boolean[] | undefined>;

/** A user-facing error: printed as one line, without a stack trace unless --debug. */
export class UsageError extends Error {
  override name = "UsageError";
}

export const COMMON_FLAGS: Record<string, Flag> = {
  threads: {
    type: "string",
    valueName: "N",
    description: "compute threads (default: LORA_THREADS, else the number of cores)",
  },
  backend: {
    type: "string",
    valueName: "NAME",
    description: "kernel backend: native, wasm or ref (default: LORA_BACKEND, else the fastest)",
  },
  "max-memory": {
    type: "string",
    valueName: "SIZE",
    description:
      "memory a model, adapter or dataset may take, e.g. 8G (default: this machine's); loads that need more are refused first",
  },
  help: { type: "boolean", short: "h", description: "show this help" },
  debug: { type: "boolean", description: "print stack traces on errors" },
};

export function helpText(cmd: Command): string {
  const flags = { ...cmd.flags, ...COMMON_FLAGS };
  const left = Object.entries(flags).map(([name, f]) => {
    const value = f.type === "string" ? ` <${f.valueName ?? "value"}>` : "";
    return `${f.short ? `-${f.short}, ` : "    "}--${name}${value}`;
  });
  const width = Math.max(...left.map((l) => l.length)) + 2;
  const lines = Object.values(flags).map(
    (f, i) => `  ${left[i]!.padEnd(width)}${f.description}${f.multiple ? " (repeatable)" : ""}`,
  );
  const examples = cmd.examples?.length
    ? `\n\nExamples:\n${cmd.examples.map((e) => `  ${e}`).join("\n")}`
    : "";
  return `${cmd.summary}\n\nUsage: ${cmd.usage}\n\nOptions:\n${lines.join("\n")}${examples}\n`;
}

/** Parses argv for a command; unknown flags and stray arguments are UsageErrors that point at --help. */
export function parseFlags(cmd: Command, argv: string[]): Values {
  const options = Object.fromEntries(
    Object.entries({ ...cmd.flags, ...COMMON_FLAGS }).map(([k, f]) => [
      k,
      { type: f.type, multiple: f.multiple ?? false, ...(f.short ? { short: f.short } : {}) },
    ]),
  );
  try {
    const args = joinNegativeValues(argv, options);
    const { values, positionals } = parseArgs({ args, options, strict: true, allowPositionals: true });
    if (cmd.positionals) {
      if (positionals.length < cmd.positionals.min)
        throw new UsageError(
          `missing ${cmd.positionals.valueName} for 'lora ${cmd.name}'; see 'lora ${cmd.name} --help'`,
        );
      const { max } = cmd.positionals;
      if (max !== undefined && positionals.length > max)
        throw new UsageError(
          `unexpected argument "${positionals[max]}" for 'lora ${cmd.name}' (it takes ${max} ${cmd.positionals.valueName}); see 'lora ${cmd.name} --help'`,
        );
      return { ...values, _: positionals } as Values;
    }
    if (positionals.length > 0) {
      throw new UsageError(
        `unexpected argument "${positionals[0]}" for 'lora ${cmd.name}'; see 'lora ${cmd.name} --help'`,
      );
    }
    return values as Values;
  } catch (e) {
    if (e instanceof UsageError) throw e;
    const msg = (e as Error).message.replace(/\. To specify a positional argument.*$/s, "");
    throw new UsageError(`${msg} (lora ${cmd.name}); see 'lora ${cmd.name} --help'`);
  }
}

/**
 * `--steps -1` as `--steps=-1`: parseArgs takes a value that starts with "-" for an option (and calls
 * it ambiguous), so a negative number reaches the flag's own range check and its message instead.
 */
function joinNegativeValues(argv: string[], options: Record<string, { type: string }>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    const isValueFlag = a.startsWith("--") && !a.includes("=") && options[a.slice(2)]?.type === "string";
    if (isValueFlag && next !== undefined && /^-(\d|\.\d|Infinity)/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

/** Flag value readers that name the flag and the expected form when a value is wrong. */
export function str(v: Values, name: string): string | undefined {
  const x = v[name];
  return typeof x === "string" ? x : undefined;
}

export function required(v: Values, name: string, cmd: string): string {
  const x = str(v, name);
  if (x === undefined) throw new UsageError(`missing --${name} for 'lora ${cmd}'; see 'lora ${cmd} --help'`);
  return x;
}

export function num(v: Values, name: string, fallback: number, check: NumberBounds = {}): number {
  const raw = str(v, name);
  return raw === undefined ? fallback : checkedNumber(name, raw, check);
}
