/**
 * Running one completion or chat request: its n choices per prompt become sequences on the
 * scheduler; each choice's text is decoded incrementally (as `lora generate` prints it), cut at the
 * first stop string, and ends at an end-of-sequence token ("stop") or at max_tokens ("length").
 * Non-streamed, the response object is built at the end; streamed, chunks are pushed as text
 * becomes final (text that could still begin a stop string is held back).
 */
import { createStreamDecoder } from "../io/tokenizer.js";
import { Channel } from "./channel.js";
import type { Engine } from "./engine.js";
import type { Metrics } from "./metrics.js";
import type { GenerationRequest } from "./requests.js";
import type { Scheduler, SequenceSpec } from "./scheduler.js";

type Json = Record<string, unknown>;
type Finish = "stop" | "length";

interface Choice {
  index: number;
  text: string;
  finish: Finish | null;
  tokens: number;
}

const randomId = () => globalThis.crypto.randomUUID().replaceAll("-", "");

export interface RunContext {
  engine: Engine;
  scheduler: Scheduler<unknown>;
  metrics: Metrics;
}

/**
 * Starts `req` (its adapter already resolved: null is the base). Returns the response object, or,
 * when streamed, the chunks (the caller writes them as server-sent events and ends with [DONE]).
 */
export function runGeneration(
  ctx: RunContext,
  req: GenerationRequest,
  adapter: string | null,
  signal?: AbortSignal,
): Promise<Json> | AsyncIterable<Json> {
  const { engine, metrics } = ctx;
  const tok = engine.tokenizer;
  const chat = req.kind === "chat";
  const id = `${chat ? "chatcmpl" : "cmpl"}-${randomId()}`;
  const created = Math.floor(Date.now() / 1000);
  const object = chat ? "chat.completion" : "text_completion";
  const promptTokens = req.prompts.reduce((s, p) => s + p.length, 0);
  const choices: Choice[] = [];
  const channel = req.stream ? new Channel<Json>() : null;
  const holdBack = Math.max(0, ...req.stop.map((s) => s.length - 1));
  const stopIds = tok.eosIds;

  const chunk = (c: Choice, text: string, finish: Finish | null): Json => ({
    id,
    object: chat ? "chat.completion.chunk" : "text_completion",
    created,
    model: req.model,
    choices: [
      chat
        ? {
            index: c.index,
            delta: text === "" && finish ? {} : { content: text },
            logprobs: null,
            finish_reason: finish,
          }
        : { index: c.index, text, logprobs: null, finish_reason: finish },
    ],
  });
  const usage = () => {
    const completion = choices.reduce((s, c) => s + c.tokens, 0);
    return {
      prompt_tokens: promptTokens,
      completion_tokens: completion,
      total_tokens: promptTokens + completion,
    };
  };

  let pending = 0;
  let failed: Error | null = null;
  let resolve!: (v: Json) => void;
  let reject!: (e: Error) => void;
  const done = new Promise<Json>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  const release = engine.hold(adapter);

  const finishAll = () => {
    release();
    if (failed) {
      channel ? channel.end(failed) : reject(failed);
      return;
    }
    if (channel) {
      if (req.includeUsage)
        channel.push({
          id,
          object: "chat.completion.chunk",
          created,
          model: req.model,
          choices: [],
          usage: usage(),
        });
      channel.end();
      return;
    }
    resolve({
      id,
      object,
      created,
      model: req.model,
      choices: choices.map((c) =>
        chat
          ? {
              index: c.index,
              message: { role: "assistant", content: c.text },
              logprobs: null,
              finish_reason: c.finish,
            }
          : { index: c.index, text: c.text, logprobs: null, finish_reason: c.finish },
      ),
      usage: usage(),
    });
  };

  const specs: SequenceSpec[] = [];
  req.prompts.forEach((prompt, p) => {
    for (let k = 0; k < req.n; k++) {
      const c: Choice = { index: p * req.n + k, text: "", finish: null, tokens: 0 };
      choices.push(c);
      const decoder = createStreamDecoder(tok, { context: prompt });
      let full = "";
      let sent = 0; // characters of `full` already streamed
      const emit = (final: boolean) => {
        const upto = final ? full.length : Math.max(sent, full.length - holdBack);
        if (channel && (upto > sent || final)) {
          const text = full.slice(sent, upto);
          if (text || final) channel.push(chunk(c, text, final ? c.finish : null));
        }
        sent = upto;
      };
      /** Appends text; true when a stop string ended the choice (the text is cut before it). */
      const append = (text: string): boolean => {
        const from = Math.max(0, full.length - holdBack);
        full += text;
        for (const s of req.stop) {
          const at = full.indexOf(s, from);
          if (at >= 0) {
            full = full.slice(0, at);
            return true;
          }
        }
        return false;
      };
      const finish = (why: Finish) => {
        c.finish = why;
        c.text = full;
        emit(true);
        return false;
      };
      pending++;
      specs.push({
        adapter,
        prompt,
        // choice k of n gets its own stream: seed + k (greedy ignores it)
        sampling: {
          maxTokens: req.maxTokens,
          temperature: req.temperature,
          topK: req.topK,
          topP: req.topP,
          seed: req.seed + k,
          stopIds,
        },
        onToken: (tokenId) => {
          c.tokens++;
          metrics.tokens(1);
          if (stopIds.includes(tokenId)) {
            append(decoder.flush());
            return finish("stop");
          }
          if (append(decoder.push(tokenId))) return finish("stop");
          if (c.tokens >= req.maxTokens) {
            if (append(decoder.flush())) return finish("stop");
            return finish("length");
          }
          emit(false);
          return true;
        },
        onEnd: (error) => {
          if (error) failed ??= error;
          if (--pending === 0) finishAll();
        },
      });
    }
  });
  if (channel && chat)
    for (const c of choices)
      channel.push({
        id,
        object: "chat.completion.chunk",
        created,
        model: req.model,
        choices: [
          { index: c.index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
        ],
      });
  try {
    ctx.scheduler.submit(specs, signal);
  } catch (e) {
    release();
    throw e;
  }
  metrics.promptTokens += promptTokens;
  return channel ?? done;
}
