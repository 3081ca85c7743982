/**
 * The scheduler: a bounded queue of requests and a loop that steps decoding. Between steps it drops
 * sequences whose client went away, admits queued requests while fewer than maxBatch sequences run,
 * then makes one decode step over all running sequences; a finished sequence leaves at once.
 *
 * The step is a function of the whole running set (`DecodeStep`): engine.ts `stepBatched` makes one
 * base product for every row, a gathered per-row LoRA term, and attention per row over its own cache;
 * `stepEach` (families without a batched step) runs the sequences one after another.
 */
import type { SamplingOptions } from "../models/generate.js";
import { ApiError } from "./errors.js";

/** What a sequence needs from the loop. `onToken` returns false when the sequence is finished. */
export interface SequenceSpec {
  adapter: string | null;
  prompt: readonly number[];
  sampling: SamplingOptions;
  onToken(id: number): boolean;
  /** Called once: with no error when finished, or with why it was dropped. */
  onEnd(error?: Error): void;
}

/** A running sequence: its spec plus the step's own state (a KV cache, a sampler). */
export interface Sequence<S = unknown> {
  spec: SequenceSpec;
  state: S;
}

/** One decode step: the next token of every sequence, in order. */
export interface DecodeStep<S> {
  start(spec: SequenceSpec): S;
  step(batch: readonly Sequence<S>[]): number[];
  /** Called once per started sequence when it leaves (finished, dropped or failed): frees its state. */
  end?(state: S): void;
}

interface Waiting {
  specs: SequenceSpec[];
  signal?: AbortSignal;
}

export interface SchedulerOptions {
  maxBatch: number;
  maxQueue: number;
  /** Lets I/O run between steps (default: setImmediate where it exists, else setTimeout 0). */
  yieldToIO?: () => Promise<void>;
  /** Called after every step with the number of rows it decoded. */
  onStep?: (rows: number) => void;
}

/** nginx's 499, "client closed request": counted in the metrics, never sent (nobody is listening). */
const disconnected = () => new ApiError(499, "the client disconnected", "invalid_request_error");

const defaultYield = (): Promise<void> => {
  const g = globalThis as { setImmediate?: (f: () => void) => void };
  return new Promise((r) => (g.setImmediate ? g.setImmediate(r) : setTimeout(r, 0)));
};

export class Scheduler<S> {
  private readonly queue: Waiting[] = [];
  private running: { seq: Sequence<S>; signal?: AbortSignal }[] = [];
  private loop: Promise<void> | null = null;
  private draining = false;

  constructor(
    private readonly decode: DecodeStep<S>,
    private readonly opts: SchedulerOptions,
  ) {}

  get waiting(): number {
    return this.queue.length;
  }

  get active(): number {
    return this.running.length;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** Queues a request's sequences (its n choices); refuses when draining (503) or the queue is full (429). */
  submit(specs: SequenceSpec[], signal?: AbortSignal): void {
    if (this.draining)
      throw new ApiError(
        503,
        "the server is shutting down; retry on another instance",
        "service_unavailable",
      );
    if (this.queue.length >= this.opts.maxQueue)
      throw new ApiError(
        429,
        `the request queue is full (${this.opts.maxQueue} waiting, --max-queue); retry later`,
        "rate_limit_error",
      );
    this.queue.push({ specs, signal });
    this.loop ??= this.run().finally(() => (this.loop = null));
  }

  /** Stops accepting requests; resolves once every queued and running sequence has finished. */
  async drain(): Promise<void> {
    this.draining = true;
    while (this.loop) await this.loop;
  }

  private admit(): void {
    for (const w of this.queue) if (w.signal?.aborted) for (const s of w.specs) s.onEnd(disconnected());
    for (let i = this.queue.length - 1; i >= 0; i--)
      if (this.queue[i]!.signal?.aborted) this.queue.splice(i, 1);
    // a request's n choices are admitted together, once there is room for all of them (or nothing runs)
    while (this.queue.length > 0) {
      const next = this.queue[0]!;
      if (this.running.length > 0 && this.running.length + next.specs.length > this.opts.maxBatch) break;
      this.queue.shift();
      for (const spec of next.specs) {
        try {
          this.running.push({ seq: { spec, state: this.decode.start(spec) }, signal: next.signal });
        } catch (e) {
          spec.onEnd(e as Error);
        }
      }
    }
  }

  /**
   * A sequence leaves the running set: its state is freed, then its spec told why. Neither may stop the
   * loop: a throw here would leave the sequence running over a freed state, or the rest of a failed
   * batch unfreed (onEnd is the request's own code; the server's never throws).
   */
  private leave(seq: Sequence<S>, error?: Error): void {
    try {
      this.decode.end?.(seq.state);
    } catch {
      // a state that cannot be freed is the step's bug; the sequence still ends
    }
    try {
      seq.spec.onEnd(error);
    } catch {
      // as above: the request's own failure to finish is not the other sequences'
    }
  }

  private async run(): Promise<void> {
    for (;;) {
      this.running = this.running.filter(({ seq, signal }) => {
        if (!signal?.aborted) return true;
        this.leave(seq, disconnected());
        return false;
      });
      this.admit();
      if (this.running.length === 0) return;
      const batch = this.running.map((r) => r.seq);
      let tokens: number[];
      try {
        tokens = this.decode.step(batch);
      } catch (e) {
        for (const s of batch) this.leave(s, e as Error);
        this.running = [];
        continue;
      }
      this.opts.onStep?.(batch.length);
      this.running = this.running.filter(({ seq }, i) => {
        let more: boolean;
        try {
          more = seq.spec.onToken(tokens[i]!);
        } catch (e) {
          this.leave(seq, e as Error);
          return false;
        }
        if (!more) this.leave(seq);
        return more;
      });
      await (this.opts.yieldToIO ?? defaultYield)();
    }
  }
}
