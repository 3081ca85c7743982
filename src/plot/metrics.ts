/**
 * A training run's metrics as plottable series, read from the rows `lora train` writes to
 * metrics.jsonl: a train row {step, loss, lr, tokens, elapsed_s, grad_norm} per step and a
 * validation row {step, val_loss, val_perplexity, elapsed_s} per evaluation.
 */

export interface TrainPoint {
  step: number;
  tokens: number;
  loss: number;
  lr: number;
}

export interface ValPoint {
  step: number;
  /** The tokens trained on when the evaluation ran (from the train row of the same step). */
  tokens: number;
  loss: number;
}

export interface RunMetrics {
  /** The run's label in a legend (its folder name). */
  name: string;
  train: TrainPoint[];
  val: ValPoint[];
}

const finite = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/**
 * Parses metrics.jsonl text. A line that is not a metrics row (a torn last line of a killed run,
 * or a row with a non-finite value) is skipped and counted, never guessed at; a row repeated for a
 * step (a resumed run) keeps the later one.
 */
export function parseMetrics(text: string, name: string): RunMetrics & { skipped: number } {
  const train = new Map<number, TrainPoint>();
  const val = new Map<number, { step: number; loss: number }>();
  let skipped = 0;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    let row: Record<string, unknown>;
    try {
      row = JSON.parse(line) as Record<string, unknown>;
    } catch {
      skipped++;
      continue;
    }
    const { step } = row;
    if (!finite(step)) skipped++;
    else if (finite(row.loss) && finite(row.tokens) && finite(row.lr))
      train.set(step, { step, tokens: row.tokens, loss: row.loss, lr: row.lr });
    else if (finite(row.val_loss)) val.set(step, { step, loss: row.val_loss });
    else skipped++;
  }
  const trainPoints = [...train.values()].sort((a, b) => a.step - b.step);
  const tokensAt = new Map(trainPoints.map((p) => [p.step, p.tokens]));
  const valPoints = [...val.values()]
    .sort((a, b) => a.step - b.step)
    .map((v) => ({ ...v, tokens: tokensAt.get(v.step) ?? tokensBefore(trainPoints, v.step) }));
  return { name, train: trainPoints, val: valPoints, skipped };
}

/** Tokens trained on by `step`: an evaluation at step 0 (before training) has seen none. */
function tokensBefore(train: TrainPoint[], step: number): number {
  let tokens = 0;
  for (const p of train) if (p.step <= step) tokens = p.tokens;
  return tokens;
}
