/**
 * The API on node:http. node:http rather than a framework: the server has seven routes, one body
 * format and a streamed response, and what it needs most is direct control of the socket: reading the
 * body with a hard size limit (413 before it is buffered), writing server-sent events as tokens come,
 * and seeing a client disconnect at once (the response's "close") to free its slot. A framework would
 * add a dependency and hide exactly those parts; the routing is a switch in api.ts.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Api, ApiResponse } from "../api.js";
import { ApiError, asApiError } from "../errors.js";

export interface HttpOptions {
  /** The largest request body, in bytes (--max-body). */
  maxBody: number;
}

function readBody(req: IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? 0);
    const tooBig = () =>
      new ApiError(
        413,
        `the request body is larger than this server's limit of ${max} bytes (--max-body)`,
        "invalid_request_error",
        null,
        "request_too_large",
      );
    if (declared > max) return reject(tooBig());
    const parts: Buffer[] = [];
    let size = 0;
    req.on("data", (b: Buffer) => {
      size += b.length;
      if (size > max) {
        reject(tooBig());
        req.removeAllListeners("data");
        req.resume();
        return;
      }
      parts.push(b);
    });
    req.on("end", () => resolve(Buffer.concat(parts).toString("utf8")));
    req.on("error", reject);
  });
}

function sendJson(res: ServerResponse, status: number, json: unknown): void {
  const body = JSON.stringify(json);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

async function send(res: ServerResponse, out: ApiResponse, abort: AbortController): Promise<void> {
  if ("json" in out) return sendJson(res, out.status, out.json);
  if ("text" in out) {
    res.writeHead(out.status, { "content-type": out.contentType });
    res.end(out.text);
    return;
  }
  res.writeHead(200, {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    connection: "keep-alive",
  });
  try {
    for await (const event of out.events) {
      if (abort.signal.aborted) return;
      res.write(`data: ${JSON.stringify(event)}\n\n`);
    }
  } catch (e) {
    if (abort.signal.aborted) return;
    res.write(`data: ${JSON.stringify(asApiError(e).body())}\n\n`);
  }
  res.end("data: [DONE]\n\n");
}

/** An http.Server answering with `api` (not yet listening). */
export function createApiServer(api: Api, opts: HttpOptions): Server {
  const server = createServer((req, res) => {
    const abort = new AbortController();
    // shutting down (close() was called): no keep-alive, so the connection ends with this response
    if (!server.listening) res.setHeader("connection", "close");
    // the client went away before the response was complete: its sequences leave the batch
    res.on("close", () => {
      if (!res.writableFinished) abort.abort();
    });
    (async () => {
      let body = "";
      try {
        if (req.method === "POST") body = await readBody(req, opts.maxBody);
      } catch (e) {
        const err = asApiError(e);
        res.setHeader("connection", "close");
        return sendJson(res, err.status, err.body());
      }
      const out = await api.handle({
        method: req.method ?? "GET",
        path: req.url ?? "/",
        headers: req.headers as Record<string, string | undefined>,
        body,
        signal: abort.signal,
      });
      await send(res, out, abort);
    })().catch((e) => {
      if (!res.headersSent) sendJson(res, 500, asApiError(e).body());
      else res.destroy();
    });
  });
  return server;
}
