/**
 * Parsing and checking the bodies of POST /v1/completions and /v1/chat/completions, with the OpenAI
 * API's field names. Every problem is a 400 naming its field. Unknown fields are ignored, as vLLM does.
 */
import type { ChatMessage, Tokenizer } from "../io/tokenizer.js";
import { badField } from "./errors.js";

type Json = Record<string, unknown>;

export interface Limits {
  /** The most tokens one request may ask for (--max-tokens). */
  maxTokens: number;
  contextLength: number;
  /** The most choices (`n`) one request may ask for. */
  maxN: number;
}

export interface GenerationRequest {
  kind: "completion" | "chat";
  model: string;
  /** One token list per prompt (a chat has one). */
  prompts: number[][];
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  stop: string[];
  n: number;
  stream: boolean;
  includeUsage: boolean;
}

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v);

function num(body: Json, key: string, fallback: number, ok: (v: number) => boolean, want: string): number {
  const v = body[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || !ok(v))
    throw badField(key, `'${key}' must be ${want}, got ${JSON.stringify(v)}`);
  return v;
}

function stopList(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || !list.every((s) => typeof s === "string" && s.length > 0) || list.length > 4)
    throw badField("stop", "'stop' must be a non-empty string or a list of up to 4 of them");
  return list as string[];
}

function messageText(m: unknown, i: number): ChatMessage {
  const msg = m as Json;
  if (msg === null || typeof msg !== "object" || typeof msg.role !== "string")
    throw badField(`messages[${i}]`, `messages[${i}] must be an object with a string 'role'`);
  const c = msg.content;
  if (typeof c === "string") return { role: msg.role, content: c };
  // content parts: only text parts are supported
  if (
    Array.isArray(c) &&
    c.every((p) => (p as Json)?.type === "text" && typeof (p as Json).text === "string")
  )
    return { role: msg.role, content: c.map((p) => (p as Json).text).join("") };
  throw badField(
    `messages[${i}].content`,
    `messages[${i}].content must be a string or a list of {"type": "text", "text": ...} parts`,
  );
}

/** The token lists of a completions `prompt`: a string, a list of strings, a token list, or a list of those. */
function completionPrompts(v: unknown, tok: Tokenizer): number[][] {
  const one = (p: unknown): number[] | null =>
    typeof p === "string"
      ? tok.encode(p)
      : Array.isArray(p) && p.length > 0 && p.every((x) => isInt(x) && x >= 0)
        ? (p as number[])
        : null;
  const single = one(v);
  if (single) return [single];
  if (Array.isArray(v) && v.length > 0) {
    const all = v.map(one);
    if (all.every((p) => p !== null)) return all as number[][];
  }
  throw badField(
    "prompt",
    "'prompt' must be a string, a list of strings, a list of token ids, or a list of token-id lists",
  );
}

export function parseGeneration(
  kind: "completion" | "chat",
  body: unknown,
  tok: Tokenizer,
  vocabSize: number,
  limits: Limits,
): GenerationRequest {
  if (body === null || typeof body !== "object" || Array.isArray(body))
    throw badField("body", "the request body must be a JSON object");
  const b = body as Json;
  if (typeof b.model !== "string")
    throw badField("model", "'model' is required: the base model or an adapter");
  let prompts: number[][];
  if (kind === "chat") {
    if (!Array.isArray(b.messages) || b.messages.length === 0)
      throw badField("messages", "'messages' must be a non-empty list of {role, content}");
    const messages = b.messages.map(messageText);
    let text: string;
    try {
      text = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
    } catch (e) {
      throw badField("messages", (e as Error).message);
    }
    prompts = [tok.encode(text, { addSpecialTokens: false })];
  } else {
    prompts = completionPrompts(b.prompt, tok);
  }
  for (const p of prompts) {
    if (p.length === 0) throw badField(kind === "chat" ? "messages" : "prompt", "the prompt has no tokens");
    const bad = p.find((id) => id >= vocabSize);
    if (bad !== undefined)
      throw badField("prompt", `token id ${bad} is outside the model's vocabulary of ${vocabSize}`);
  }
  const longest = Math.max(...prompts.map((p) => p.length));
  const ctx = limits.contextLength;
  if (longest >= ctx)
    throw badField(
      kind === "chat" ? "messages" : "prompt",
      `This model's maximum context length is ${ctx} tokens. However, your prompt has ${longest} tokens; shorten it`,
      "context_length_exceeded",
    );
  const maxKey = kind === "chat" && b.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens";
  const requested = b[maxKey];
  const maxTokens = num(
    b,
    maxKey,
    Math.min(limits.maxTokens, ctx - longest),
    (v) => isInt(v) && v >= 1,
    "an integer of at least 1",
  );
  if (maxTokens > limits.maxTokens)
    throw badField(
      maxKey,
      `'${maxKey}' is ${maxTokens}, above this server's limit of ${limits.maxTokens} (--max-tokens)`,
    );
  if (requested != null && longest + maxTokens > ctx)
    throw badField(
      maxKey,
      `This model's maximum context length is ${ctx} tokens. However, you requested ${longest + maxTokens} tokens (${longest} in the prompt, ${maxTokens} in the completion); lower '${maxKey}' or shorten the prompt`,
      "context_length_exceeded",
    );
  const n = num(
    b,
    "n",
    1,
    (v) => isInt(v) && v >= 1 && v <= limits.maxN,
    `an integer from 1 to ${limits.maxN}`,
  );
  if (prompts.length * n > limits.maxN)
    throw badField(
      "n",
      `${prompts.length} prompts × n ${n} = ${prompts.length * n} choices, above this server's limit of ${limits.maxN} per request; send fewer prompts per request`,
    );
  if (b.stream !== undefined && b.stream !== null && typeof b.stream !== "boolean")
    throw badField("stream", "'stream' must be true or false");
  const opts = b.stream_options as Json | undefined | null;
  return {
    kind,
    model: b.model,
    prompts,
    maxTokens,
    temperature: num(b, "temperature", 1, (v) => v >= 0 && v <= 2, "a number from 0 to 2"),
    topP: num(b, "top_p", 1, (v) => v > 0 && v <= 1, "a number in (0, 1]"),
    // vLLM: -1 (or 0) turns top-k off
    topK: Math.max(
      0,
      num(b, "top_k", 0, (v) => isInt(v) && v >= -1, "an integer, -1 or 0 for off"),
    ),
    // no seed: a fresh one, as the OpenAI API samples differently each time
    seed: num(b, "seed", Math.floor(Math.random() * 2 ** 31), isInt, "an integer"),
    stop: stopList(b.stop),
    n,
    stream: b.stream === true,
    includeUsage: b.stream === true && opts?.include_usage === true,
  };
}
