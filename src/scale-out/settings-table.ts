/**
 * `lora scale-out --print-settings`: every setting, ours → TRL / PEFT / accelerate, as a text table
 * (the same rows go into the generated README as Markdown). Pure.
 */
import { ENGINE_MAPPING, MAPPING, type Mapping } from "./mapping.js";

const rows = (): [string, Mapping][] => [
  ...Object.entries(MAPPING).map(([k, m]): [string, Mapping] => [`--${k}`, m]),
  ...Object.entries(ENGINE_MAPPING).map(([k, m]): [string, Mapping] => [`--${k}`, m]),
];

/** Aligned columns for a terminal. */
export function settingsTable(): string {
  const all = rows();
  const head: [string, string, string] = ["lora-ts", "TRL / PEFT / accelerate", "how"];
  const w0 = Math.max(head[0].length, ...all.map(([k]) => k.length));
  const w1 = Math.max(head[1].length, ...all.map(([, m]) => m.engine.length));
  const line = (a: string, b: string, c: string) => `${a.padEnd(w0)}  ${b.padEnd(w1)}  ${c}`.trimEnd();
  return [
    line(...head),
    line("-".repeat(w0), "-".repeat(w1), "---"),
    ...all.map(([k, m]) => line(k, m.engine, m.how)),
  ].join("\n");
}

/** The same table in Markdown. */
export function settingsMarkdown(): string {
  const esc = (s: string) => s.replaceAll("|", "\\|");
  return [
    "| lora-ts | TRL / PEFT / accelerate | how |",
    "|---|---|---|",
    ...rows().map(([k, m]) => `| \`${k}\` | \`${esc(m.engine)}\` | ${esc(m.how)} |`),
  ].join("\n");
}
