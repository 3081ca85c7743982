/** Wires a server together: the engine (model, tokenizer, adapters), the scheduler, metrics and the API. */
import type { Tokenizer } from "../io/tokenizer.js";
import type { CausalLM } from "../models/model.js";
import { Api, type ApiOptions } from "./api.js";
import { Engine } from "./engine.js";
import { Metrics } from "./metrics.js";
import { Scheduler } from "./scheduler.js";

export interface ServingOptions extends ApiOptions {
  model: CausalLM;
  tokenizer: Tokenizer;
  baseName: string;
  contextLength: number;
  /** The most sequences decoded at once (--max-batch). */
  maxBatch: number;
  /** The most requests waiting (--max-queue). */
  maxQueue: number;
}

export interface Serving {
  engine: Engine;
  scheduler: Scheduler<unknown>;
  metrics: Metrics;
  api: Api;
}

export function createServing(o: ServingOptions): Serving {
  const engine = new Engine(o);
  const metrics = new Metrics();
  const scheduler = new Scheduler(engine.decodeStep(), {
    maxBatch: o.maxBatch,
    maxQueue: o.maxQueue,
    onStep: (rows) => metrics.step(rows),
  }) as Scheduler<unknown>;
  return { engine, scheduler, metrics, api: new Api(engine, scheduler, metrics, o) };
}
