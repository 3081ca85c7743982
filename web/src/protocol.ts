/** The messages between the page and its training worker. */
import type { NamedBlob } from "./model-files.js";

export type Source =
  | { kind: "demo" }
  | { kind: "files"; folder: string; model: NamedBlob[]; data: NamedBlob };

/** The settings as the CLI's flags name them (steps, rank, lr, alpha, targets, batch-size, seq-len, ...). */
export type SettingInput = Record<string, string | number | boolean>;

export type ToWorker =
  /** `threads`: how many the page asks for; the worker uses one where the page is not cross-origin isolated. */
  | { type: "open"; source: Source; threads: number }
  | { type: "report"; settings: SettingInput }
  | { type: "train"; settings: SettingInput; resume: boolean }
  | { type: "stop" }
  | { type: "merge" }
  | { type: "gguf" }
  | { type: "discard" };

export type FromWorker =
  | { type: "opened"; summary: string; threads: string; saved: { step: number; steps: number } | null }
  | { type: "report"; line: string }
  | { type: "status"; text: string }
  | { type: "sample"; which: "before" | "after"; text: string }
  | { type: "plan"; steps: number; firstStep: number; rows: number; valRows: number }
  | {
      type: "step";
      step: number;
      steps: number;
      loss: number;
      tokens: number;
      elapsedS: number;
      tokensPerS: number;
    }
  | { type: "eval"; step: number; valLoss: number }
  | { type: "checkpoint"; step: number }
  | { type: "done"; adapter: Record<string, Uint8Array | string>; stopped: boolean }
  | { type: "merged"; zip: Uint8Array }
  | { type: "gguf"; bytes: Uint8Array }
  | { type: "error"; message: string };
