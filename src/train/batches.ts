/**
 * Training batches: a fixed row order per epoch (shuffled from the seed and the epoch number, or
 * the file's order), right padding, and a position (epoch, cursor) that a checkpoint stores, so a
 * resumed run sees exactly the batches an uninterrupted one would. Pure.
 */
import { Rng } from "../tensor/random.js";
import type { TokenizedRow } from "./data.js";
import { nextTokenTargets } from "./loss.js";

export interface Batch {
  // ids: [B, T] (right-padded) -> targets: [B, T], IGNORE at padding, masked tokens and row ends
  ids: Int32Array;
  targets: Int32Array;
  shape: [number, number];
  /** Number of targets (tokens that carry loss). */
  tokens: number;
}

/** Where the next batch starts: `cursor` indexes the epoch's row order. */
export interface DataPosition {
  epoch: number;
  cursor: number;
}

export interface BatcherOptions {
  batchSize: number;
  shuffle: boolean;
  seed: number;
  /** Fills the padding (it carries no loss, and causal attention keeps it out of earlier positions). */
  padId?: number;
}

export class Batcher {
  private order: number[] = [];
  private orderEpoch = -1;
  private pos: DataPosition;

  constructor(
    private readonly rows: readonly TokenizedRow[],
    private readonly opts: BatcherOptions,
    start: DataPosition = { epoch: 0, cursor: 0 },
  ) {
    if (rows.length === 0) throw new Error("no training rows");
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1)
      throw new Error(`batch size must be a positive integer, got ${opts.batchSize}`);
    if (start.cursor < 0 || start.cursor >= rows.length || start.epoch < 0)
      throw new Error(`data position ${JSON.stringify(start)} does not fit ${rows.length} rows`);
    this.pos = { ...start };
  }

  /** Batches per epoch; the last one may be smaller. */
  get batchesPerEpoch(): number {
    return Math.ceil(this.rows.length / this.opts.batchSize);
  }

  get position(): DataPosition {
    return { ...this.pos };
  }

  private orderOf(epoch: number): number[] {
    if (this.orderEpoch !== epoch) {
      this.order = this.rows.map((_, i) => i);
      if (this.opts.shuffle)
        new Rng((Math.imul(this.opts.seed, 1_000_003) + epoch) >>> 0).shuffle(this.order);
      this.orderEpoch = epoch;
    }
    return this.order;
  }

  /** The next batch; after the epoch's last row it starts the next epoch. */
  next(): Batch {
    const order = this.orderOf(this.pos.epoch);
    const picked = order.slice(this.pos.cursor, this.pos.cursor + this.opts.batchSize);
    this.pos.cursor += picked.length;
    if (this.pos.cursor >= order.length) this.pos = { epoch: this.pos.epoch + 1, cursor: 0 };
    return makeBatch(
      picked.map((i) => this.rows[i]!),
      this.opts.padId ?? 0,
    );
  }
}

/** Rows -> one right-padded batch. */
export function makeBatch(rows: readonly TokenizedRow[], padId = 0): Batch {
  const B = rows.length;
  const T = Math.max(...rows.map((r) => r.ids.length));
  const ids = new Int32Array(B * T).fill(padId);
  const mask = new Uint8Array(B * T);
  rows.forEach((r, b) => {
    ids.set(r.ids, b * T);
    mask.set(r.mask, b * T);
  });
  const targets = nextTokenTargets(ids, B, T, mask);
  let tokens = 0;
  for (const t of targets) if (t >= 0) tokens++;
  return { ids, targets, shape: [B, T], tokens };
}

/** Number of targets a row contributes (its tokens after the first that the mask keeps). */
export function rowTargets(row: TokenizedRow): number {
  let n = 0;
  for (let t = 1; t < row.ids.length; t++) if (row.mask[t]) n++;
  return n;
}

/**
 * Pretraining-style packing: the rows, in order, joined into one stream and cut into rows of `len`
 * tokens (the last may be shorter). Masks travel with their tokens; no padding is left to compute.
 */
export function packRows(rows: readonly TokenizedRow[], len: number): TokenizedRow[] {
  const ids = rows.flatMap((r) => r.ids);
  const mask = rows.flatMap((r) => r.mask);
  const out: TokenizedRow[] = [];
  for (let at = 0; at < ids.length; at += len)
    out.push({ ids: ids.slice(at, at + len), mask: mask.slice(at, at + len) });
  return out;
}
