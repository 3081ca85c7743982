/** Held-out evaluation: mean next-token negative log-likelihood (nats) over every predicted token. */
import { noGrad } from "../autograd/tape.js";
import type { CausalLM } from "../models/index.js";
import { makeBatch } from "./batches.js";
import type { TokenizedRow } from "./data.js";
import { languageModelLoss } from "./loss.js";

export interface EvalResult {
  /** Mean negative log-likelihood per predicted token, natural log. */
  loss: number;
  perplexity: number;
  /** Number of predicted (target) tokens. */
  tokens: number;
}

/** Rows per forward pass, and padded tokens per pass, of held-out evaluation. */
const EVAL_ROWS = 16;
const EVAL_TOKENS = 16384;

/**
 * Each row is one sequence: position t predicts token t+1 where the row's mask marks it as a target.
 * Rows of similar length are scored together (padded on the right, which causal attention never
 * sees), up to EVAL_ROWS rows and EVAL_TOKENS padded tokens a pass; `onRow` hears how many are done.
 */
export function evaluate(
  model: CausalLM,
  rows: readonly TokenizedRow[],
  onRow?: (done: number, total: number) => void,
): EvalResult {
  let total = 0;
  let tokens = 0;
  const order = rows.map((_, i) => i).sort((a, b) => rows[a]!.ids.length - rows[b]!.ids.length);
  noGrad(() => {
    let done = 0;
    while (done < order.length) {
      const group: TokenizedRow[] = [];
      while (done + group.length < order.length && group.length < EVAL_ROWS) {
        const next = rows[order[done + group.length]!]!;
        if (group.length > 0 && (group.length + 1) * next.ids.length > EVAL_TOKENS) break;
        group.push(next);
      }
      const batch = makeBatch(group);
      if (batch.tokens > 0) {
        total += languageModelLoss(model, batch.ids, batch.shape, batch.targets, "sum").item();
        tokens += batch.tokens;
      }
      done += group.length;
      onRow?.(done, rows.length);
    }
  });
  if (tokens === 0)
    throw new Error(
      "evaluate: the data has no token to predict (every row is shorter than 2 tokens or fully masked)",
    );
  const loss = total / tokens;
  return { loss, perplexity: Math.exp(loss), tokens };
}
