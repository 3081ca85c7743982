/**
 * Training progress: a live bar (cli-progress) when stdout is a terminal, otherwise plain lines
 * every `every` steps. Both show step/total, loss, learning rate, tokens/s, ETA and peak memory.
 */
import cliProgress from "cli-progress";
import type { EvalInfo, StepInfo } from "../train/trainer.js";

/** Peak resident memory of this process so far, in MiB. */
export const peakMiB = () => process.resourceUsage().maxRSS / 1024;

const fmtTime = (s: number) =>
  !Number.isFinite(s)
    ? "?"
    : s < 60
      ? `${s.toFixed(0)}s`
      : `${Math.floor(s / 60)}m${`${Math.round(s % 60)}`.padStart(2, "0")}s`;

export class Progress {
  private bar: cliProgress.SingleBar | null = null;
  private startTokens: number | null = null;

  constructor(
    private readonly total: number,
    private readonly firstStep: number,
    private readonly every = Math.max(1, Math.round((total - firstStep) / 20)),
    private readonly out: NodeJS.WriteStream = process.stdout,
  ) {}

  private fields(info: StepInfo) {
    this.startTokens ??= info.tokens - info.stepTokens;
    // rates and ETA count training steps only: evaluation and checkpoints are not in info.trainS
    const done = info.step - this.firstStep;
    const rate = (info.tokens - this.startTokens) / Math.max(1e-9, info.trainS);
    const eta = (info.trainS / done) * (info.totalSteps - info.step);
    return {
      loss: info.loss.toFixed(4),
      lr: info.lr.toExponential(2),
      tps: Math.round(rate).toLocaleString("en-US"),
      remaining: fmtTime(eta),
      mem: Math.round(peakMiB()).toLocaleString("en-US"),
    };
  }

  /** Starts the bar (on a terminal). */
  begin(): void {
    if (!this.out.isTTY) return;
    this.bar = new cliProgress.SingleBar(
      {
        format:
          "train |{bar}| {value}/{total} | loss {loss} | lr {lr} | {tps} tok/s | ETA {remaining} | peak {mem} MiB",
        stream: this.out,
        hideCursor: true,
        barsize: 24,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(this.total, this.firstStep, { loss: "-", lr: "-", tps: "-", remaining: "?", mem: "-" });
  }

  step(info: StepInfo): void {
    const f = this.fields(info);
    if (this.bar) {
      this.bar.update(info.step, f);
      return;
    }
    if (info.step % this.every === 0 || info.step === info.totalSteps || info.step === this.firstStep + 1) {
      this.out.write(
        `step ${info.step}/${info.totalSteps}  loss ${f.loss}  lr ${f.lr}  ${f.tps} tok/s  ETA ${f.remaining}  peak ${f.mem} MiB\n`,
      );
    }
  }

  /** Evaluation in progress: on a terminal, a line that counts the rows (the bar resumes after it). */
  evalRow(done: number, total: number): void {
    if (this.bar && (done === 1 || done % 5 === 0 || done === total))
      this.out.write(`\r\x1b[Kevaluating: ${done}/${total} validation rows`);
  }

  eval(info: EvalInfo): void {
    const line = `step ${info.step}: val loss ${info.valLoss.toFixed(4)} (perplexity ${Math.exp(info.valLoss).toFixed(3)})`;
    // Over a live bar: clear its line, print, and let the next update draw the bar below.
    this.out.write(`${this.bar ? "\r\x1b[K" : ""}${line}\n`);
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}

/**
 * Progress of `lora eval` on stderr (stdout may carry --json): a live count on a terminal, else a
 * line at every quarter of the rows.
 */
export function evalProgress(
  out: NodeJS.WriteStream = process.stderr,
): (done: number, total: number) => void {
  let shown = 0;
  return (done, total) => {
    if (out.isTTY) {
      if (done === 1 || done % 5 === 0 || done === total)
        out.write(`\r\x1b[Kevaluating: ${done}/${total} rows${done === total ? "\n" : ""}`);
    } else if (total >= 8 && done * 4 >= (shown + 1) * total && done < total) {
      shown = Math.floor((done * 4) / total);
      out.write(`evaluating: ${done}/${total} rows\n`);
    }
  };
}
