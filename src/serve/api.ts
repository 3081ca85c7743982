/**
 * The HTTP API without HTTP: a request (method, path, headers, body text, abort signal) in, a response
 * (JSON, text, or a stream of server-sent-event payloads) out. The routes are the OpenAI API's and
 * vLLM's LoRA extensions; `node/http-server.ts` puts this on node:http. Browser-safe: reading an
 * adapter folder is the injected `readAdapter`.
 */
import type { AdapterInput } from "../io/peft.js";
import { runGeneration } from "./completion.js";
import type { Engine } from "./engine.js";
import { ApiError, asApiError, badField } from "./errors.js";
import type { Metrics } from "./metrics.js";
import { parseGeneration } from "./requests.js";
import type { Scheduler } from "./scheduler.js";

export interface ApiRequest {
  method: string;
  path: string;
  /** Lower-case header names. */
  headers: Record<string, string | undefined>;
  body: string;
  signal?: AbortSignal;
}

export type ApiResponse =
  | { status: number; json: unknown }
  | { status: number; text: string; contentType: string }
  | { status: 200; events: AsyncIterable<unknown> };

export interface ApiOptions {
  apiKey?: string;
  maxTokens: number;
  maxN?: number;
  /** Reads the adapter at a client-given path, refusing paths outside --adapter-dir; absent: no run-time loading. */
  readAdapter?: (path: string) => { adapter: AdapterInput; root: string };
}

type Json = Record<string, unknown>;

export class Api {
  constructor(
    private readonly engine: Engine,
    private readonly scheduler: Scheduler<unknown>,
    private readonly metrics: Metrics,
    private readonly opts: ApiOptions,
  ) {}

  async handle(req: ApiRequest): Promise<ApiResponse> {
    const path = req.path.split("?")[0]!;
    let res: ApiResponse;
    try {
      res = await this.route(req, path);
    } catch (e) {
      const err = asApiError(e);
      res = { status: err.status, json: err.body() };
    }
    this.metrics.request(
      path.startsWith("/v1/") || path === "/health" || path === "/metrics" ? path : "other",
      res.status,
    );
    return res;
  }

  private async route(req: ApiRequest, path: string): Promise<ApiResponse> {
    const route = `${req.method} ${path}`;
    if (route === "GET /health") {
      if (this.scheduler.isDraining)
        throw new ApiError(503, "the server is shutting down", "service_unavailable");
      return { status: 200, json: { status: "ok" } };
    }
    if (route === "GET /metrics")
      return {
        status: 200,
        contentType: "text/plain; version=0.0.4",
        text: this.metrics.text({
          running: this.scheduler.active,
          waiting: this.scheduler.waiting,
          kv: this.engine.kvPool,
        }),
      };
    if (path.startsWith("/v1/")) this.authorize(req);
    switch (route) {
      case "GET /v1/models":
        return { status: 200, json: { object: "list", data: this.engine.models() } };
      case "POST /v1/completions":
      case "POST /v1/chat/completions":
        return this.generate(path === "/v1/completions" ? "completion" : "chat", req);
      case "POST /v1/load_lora_adapter":
        return this.loadAdapter(parseBody(req.body));
      case "POST /v1/unload_lora_adapter": {
        const name = parseBody(req.body).lora_name;
        if (typeof name !== "string") throw badField("lora_name", "'lora_name' is required");
        this.engine.unload(name);
        return {
          status: 200,
          json: { status: "ok", message: `Success: LoRA adapter '${name}' removed successfully.` },
        };
      }
    }
    throw new ApiError(404, `no route ${req.method} ${path}`, "not_found_error");
  }

  private authorize(req: ApiRequest): void {
    const key = this.opts.apiKey;
    if (key === undefined) return;
    if (req.headers.authorization !== `Bearer ${key}`)
      throw new ApiError(
        401,
        "Incorrect or missing API key: send 'Authorization: Bearer <key>' with the server's --api-key",
        "authentication_error",
        null,
        "invalid_api_key",
      );
  }

  private async generate(kind: "completion" | "chat", req: ApiRequest): Promise<ApiResponse> {
    const body = parseBody(req.body);
    const e = this.engine;
    const parsed = parseGeneration(kind, body, e.tokenizer, e.model.vocabSize, {
      maxTokens: this.opts.maxTokens,
      contextLength: e.contextLength,
      maxN: this.opts.maxN ?? 16,
    });
    const adapter = e.resolve(parsed.model);
    const run = runGeneration(
      { engine: e, scheduler: this.scheduler, metrics: this.metrics },
      parsed,
      adapter,
      req.signal,
    );
    if (parsed.stream) return { status: 200, events: run as AsyncIterable<unknown> };
    return { status: 200, json: await (run as Promise<Json>) };
  }

  private loadAdapter(body: Json): ApiResponse {
    const { lora_name: name, lora_path: path } = body;
    if (typeof name !== "string" || !/^[A-Za-z0-9._:/-]{1,128}$/.test(name))
      throw badField("lora_name", "'lora_name' must be 1-128 characters of letters, digits and . _ : / -");
    if (typeof path !== "string" || path === "") throw badField("lora_path", "'lora_path' is required");
    if (!this.opts.readAdapter)
      throw new ApiError(
        400,
        "loading adapters at run time is off: start the server with --adapter-dir DIR",
        "invalid_request_error",
        "lora_path",
      );
    if (this.engine.adapters.has(name) || name === this.engine.baseName)
      throw badField("lora_name", `The lora adapter '${name}' has already been loaded`);
    const { adapter, root } = this.opts.readAdapter(path);
    this.engine.load(name, adapter, root);
    return {
      status: 200,
      json: { status: "ok", message: `Success: LoRA adapter '${name}' added successfully.` },
    };
  }
}

function parseBody(text: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw badField("body", `the request body is not valid JSON: ${(e as Error).message}`);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v))
    throw badField("body", "the request body must be a JSON object");
  return v as Json;
}
