/** Held-out evaluation: mean next-token negative log-likelihood (nats) over every predicted token. */
import { noGrad } from "../autograd/tape.js";
import type { CausalLM } from "../models/index.js";
import type { TokenizedRow } from "./data.js";
import { languageModelLoss, nextTokenTargets } from "./loss.js";

export interface EvalResult {
  /** Mean negative log-likelihood per predicted token, natural log. */
  loss: number;
  perplexity: number;
  /** Number of predicted (target) tokens. */
  tokens: number;
}

/** Each row is one sequence: position t predicts token t+1 where the row's mask marks it as a target. */
export function evaluate(
  model: CausalLM,
  rows: readonly TokenizedRow[],
  onRow?: (done: number, total: number) => void,
): EvalResult {
  let total = 0;
  let tokens = 0;
  noGrad(() => {
    for (const [i, row] of rows.entries()) {
      const T = row.ids.length;
      const ids = Int32Array.from(row.ids);
      const targets = nextTokenTargets(ids, 1, T, row.mask);
      const count = targets.filter((t) => t >= 0).length;
      if (count > 0) {
        total += languageModelLoss(model, ids, [1, T], targets, "sum").item();
        tokens += count;
      }
      onRow?.(i + 1, rows.length);
    }
  });
  if (tokens === 0)
    throw new Error(
      "evaluate: the data has no token to predict (every row is shorter than 2 tokens or fully masked)",
    );
  const loss = total / tokens;
  return { loss, perplexity: Math.exp(loss), tokens };
}
