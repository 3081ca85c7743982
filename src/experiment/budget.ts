/**
 * The fixed parameter budget of the paper's Table 5: one matrix type at rank 8, two at rank 4, four at
 * rank 2 (GPT-3's 18M parameters), scaled to the model at hand. On a model where the types differ in
 * size (grouped-query attention: k and v are narrower than q), a rank that spends the budget exactly
 * may not exist; each configuration then takes the rank closest to it and says how far off it is.
 */
import { LORA_DEFAULTS } from "../lora/config.js";
import { type Adaptable, findTargets } from "../lora/inject.js";

/** LoRA parameters one unit of rank costs on these targets: Σ (in + out) over the matrices they pick. */
export function costPerRank(model: Adaptable, targets: readonly string[]): number {
  const picked = findTargets(model, { ...LORA_DEFAULTS, target_modules: [...targets] });
  return picked.reduce((n, [, linear]) => n + linear.inFeatures + linear.outFeatures, 0);
}

export interface BudgetConfig {
  /** "q", "q,v", ...: the paper's names for the attention matrices. */
  name: string;
  targets: string[];
  rank: number;
  /** Trainable LoRA parameters at this rank. */
  params: number;
  /** params − budget, as a fraction of the budget (0 when exact). */
  offBy: number;
}

/**
 * Each target set at the rank whose parameter count is closest to the budget of `reference` (its
 * targets at its rank), never below rank 1.
 */
export function budgetConfigs(
  model: Adaptable,
  sets: readonly { name: string; targets: string[] }[],
  reference: { targets: string[]; rank: number },
): { budget: number; configs: BudgetConfig[] } {
  const budget = reference.rank * costPerRank(model, reference.targets);
  const configs = sets.map(({ name, targets }) => {
    const cost = costPerRank(model, targets);
    const rank = Math.max(1, Math.round(budget / cost));
    const params = rank * cost;
    return { name, targets, rank, params, offBy: (params - budget) / budget };
  });
  return { budget, configs };
}
