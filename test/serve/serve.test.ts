/**
 * `lora serve` through the official `openai` client, on 127.0.0.1 with a random port, over the tiny
 * model in test/fixtures/serve (scripts/make-serve-fixture.ts) and its two adapters, "pirate" and
 * "robot", trained on different data. References are `lora generate` itself (greedy, token for token)
 * and the library's generate() on a model loaded with one adapter alone.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { isAbsolute, join } from "node:path";
import { after, before, describe, it } from "node:test";
import OpenAI from "openai";
import { loadModel } from "../../src/cli/load.js";
import { readAdapterInput } from "../../src/io/node/adapter-folder.js";
// the kernels `lora` itself runs (native where it is built), so the server here and `lora generate` compute alike
import "../../src/kernels/node/index.js";
import { resolveBaseDtype } from "../../src/nn/base-dtype.js";
import { adapterDirReader } from "../../src/serve/node/adapter-dir.js";
import { createApiServer } from "../../src/serve/node/http-server.js";
import { createServing, type Serving } from "../../src/serve/serving.js";
import { setScratchChecks } from "../../src/tensor/alloc.js";
import { CLI, fixturesDir, lora } from "../helpers.js";

// every decode step's scratch arena is new and filled with NaN when the step ends: an op output that
// outlived its step would turn the outputs compared below into garbage
setScratchChecks(true);

const fx = join(fixturesDir, "serve");
const MODEL = join(fx, "model");
const TARGETS = ["q_proj", "v_proj"];
const KEY = "test-key";
// the base dtype `lora serve` and `lora generate` default to (bf16 where its products are measured
// faster), resolved once here and given to both, so that two timings cannot disagree
const DTYPE = resolveBaseDtype("auto");

/** `lora generate`'s continuation (stdout minus the echoed prompt and the final newline). */
function cliGenerate(prompt: string, adapter: string | null, chat = false, maxTokens = 20): string {
  const args = ["generate", "--model", MODEL, "--prompt", prompt, "--max-tokens", String(maxTokens)];
  args.push("--base-dtype", DTYPE);
  if (adapter) args.push("--adapter", isAbsolute(adapter) ? adapter : join(fx, adapter));
  if (chat) args.push("--chat");
  const r = lora(...args);
  assert.equal(r.code, 0, r.err);
  assert.ok(r.out.startsWith(prompt) && r.out.endsWith("\n"));
  return r.out.slice(prompt.length, -1);
}

interface Started {
  serving: Serving;
  url: string;
  close: () => Promise<void>;
}

async function start(
  opts: { maxBatch?: number; maxQueue?: number; maxBody?: number; adapterDir?: string } = {},
) {
  const { model, tokenizer } = loadModel(MODEL, undefined, { needTokenizer: true, baseDtype: DTYPE });
  const serving = createServing({
    model,
    tokenizer: tokenizer!,
    baseName: "model",
    contextLength: 64,
    maxBatch: opts.maxBatch ?? 16,
    maxQueue: opts.maxQueue ?? 64,
    maxTokens: 40,
    apiKey: KEY,
    readAdapter: opts.adapterDir ? adapterDirReader(opts.adapterDir, TARGETS) : undefined,
  });
  for (const name of ["pirate", "robot"])
    serving.engine.load(name, readAdapterInput(join(fx, name), { defaultTargets: TARGETS }), name);
  const server = createApiServer(serving.api, { maxBody: opts.maxBody ?? 1 << 16 });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return {
    serving,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  } satisfies Started;
}

const client = (s: Started, apiKey = KEY) => new OpenAI({ baseURL: `${s.url}/v1`, apiKey, maxRetries: 0 });

/** The status and error body of a rejected client call. */
async function refused(p: Promise<unknown>): Promise<{ status: number; error: Record<string, unknown> }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof OpenAI.APIError) return { status: e.status!, error: e.error as Record<string, unknown> };
    throw e;
  }
  assert.fail("the request was not refused");
}

const post = (s: Started, path: string, body: string, key = KEY) =>
  fetch(`${s.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body,
  });

describe("lora serve", () => {
  let s: Started;
  let api: OpenAI;
  const ref: Record<string, string> = {};
  const scratch = mkdtempSync(join(tmpdir(), "lora-serve-"));

  before(async () => {
    mkdirSync(join(scratch, "adapters"));
    s = await start({ adapterDir: join(scratch, "adapters") });
    api = client(s);
    for (const a of [null, "pirate", "robot"]) {
      ref[`once ${a}`] = cliGenerate("once", a);
      ref[`chat ${a}`] = cliGenerate("hello", a, true);
    }
  });
  after(async () => {
    await s.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  it("lists the base and each adapter with its parent", async () => {
    const list = await api.models.list();
    const data = list.data as unknown as { id: string; parent: string | null; root: string }[];
    assert.deepEqual(
      data.map((m) => [m.id, m.parent]),
      [
        ["model", null],
        ["pirate", "model"],
        ["robot", "model"],
      ],
    );
  });

  it("completions and chat, streamed and not, equal `lora generate` for the base and both adapters", async () => {
    // the adapters visibly change the text
    assert.match(ref["once pirate"]!, /arr matey/);
    assert.match(ref["once robot"]!, /b/);
    assert.notEqual(ref["once pirate"], ref["once robot"]);
    assert.notEqual(ref["once null"], ref["once pirate"]);
    for (const a of [null, "pirate", "robot"]) {
      const model = a ?? "model";
      const c = await api.completions.create({ model, prompt: "once", max_tokens: 20, temperature: 0 });
      assert.equal(c.choices[0]!.text, ref[`once ${a}`], `completion ${model}`);
      assert.equal(c.object, "text_completion");
      assert.equal(c.model, model);
      assert.equal(c.usage!.prompt_tokens, s.serving.engine.tokenizer.encode("once").length);
      assert.equal(c.usage!.total_tokens, c.usage!.prompt_tokens + c.usage!.completion_tokens);
      let streamed = "";
      let finish: string | null = null;
      for await (const ch of await api.completions.create({
        model,
        prompt: "once",
        max_tokens: 20,
        temperature: 0,
        stream: true,
      })) {
        streamed += ch.choices[0]!.text;
        finish = ch.choices[0]!.finish_reason ?? finish;
      }
      assert.equal(streamed, ref[`once ${a}`], `streamed completion ${model}`);
      assert.equal(finish, c.choices[0]!.finish_reason);

      const messages = [{ role: "user" as const, content: "hello" }];
      const chat = await api.chat.completions.create({ model, messages, max_tokens: 20, temperature: 0 });
      assert.equal(chat.choices[0]!.message.content, ref[`chat ${a}`], `chat ${model}`);
      assert.equal(chat.choices[0]!.message.role, "assistant");
      let chatStreamed = "";
      const stream = await api.chat.completions.create({
        model,
        messages,
        max_tokens: 20,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      let usage: OpenAI.CompletionUsage | null | undefined;
      for await (const ch of stream) {
        chatStreamed += ch.choices[0]?.delta.content ?? "";
        usage = ch.usage ?? usage;
      }
      assert.equal(chatStreamed, ref[`chat ${a}`], `streamed chat ${model}`);
      assert.deepEqual(usage, chat.usage);
    }
  });

  it("16 concurrent greedy requests across 3 adapters and the base each equal their single-request `lora generate` output", async () => {
    // a third adapter, distinct from both: pirate and robot concatenated with weights (lora merge --method cat)
    const mix = join(scratch, "mix");
    const made = lora(
      "merge",
      "--adapter",
      `${join(fx, "pirate")}:0.7`,
      "--adapter",
      `${join(fx, "robot")}:0.6`,
      "--method",
      "cat",
      "--out",
      mix,
    );
    assert.equal(made.code, 0, made.err);
    ref["once mix"] = cliGenerate("once", mix);
    ref["chat mix"] = cliGenerate("hello", mix, true);
    assert.notEqual(ref["once mix"], ref["once pirate"]);
    assert.notEqual(ref["once mix"], ref["once robot"]);
    s.serving.engine.load("mix", readAdapterInput(mix, { defaultTargets: TARGETS }), mix);
    const before = await (await fetch(`${s.url}/metrics`)).text();
    const steps0 = Number(/lora_batch_size_count (\d+)/.exec(before)![1]);
    const rows0 = Number(/lora_batch_size_sum (\d+)/.exec(before)![1]);
    const models = ["model", "pirate", "robot", "mix"];
    // prompts of different lengths (completion and chat), so the rows' caches are ragged
    const jobs = Array.from({ length: 16 }, (_, i) => {
      const model = models[i % 4]!;
      const a = model === "model" ? null : model;
      if (i % 8 < 4)
        return api.completions
          .create({ model, prompt: "once", max_tokens: 20, temperature: 0 })
          .then((c) => assert.equal(c.choices[0]!.text, ref[`once ${a}`], `request ${i} (${model})`));
      return (async () => {
        let text = "";
        const st = await api.chat.completions.create({
          model,
          messages: [{ role: "user", content: "hello" }],
          max_tokens: 20,
          temperature: 0,
          stream: true,
        });
        for await (const ch of st) text += ch.choices[0]?.delta.content ?? "";
        assert.equal(text, ref[`chat ${a}`], `request ${i} (${model}, streamed chat)`);
      })();
    });
    await Promise.all(jobs);
    s.serving.engine.unload("mix");
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    const count = Number(/lora_batch_size_count (\d+)/.exec(metrics)![1]) - steps0;
    const sum = Number(/lora_batch_size_sum (\d+)/.exec(metrics)![1]) - rows0;
    assert.ok(sum / count > 4, `sequences were batched (mean rows per step ${sum / count})`);
  });

  it("sampling: n choices, a seed repeats, stop strings cut the text", async () => {
    const body = { model: "pirate", prompt: "once", max_tokens: 12, temperature: 1, seed: 5, n: 3 };
    const a = await api.completions.create(body);
    const b = await api.completions.create(body);
    assert.deepEqual(
      a.choices.map((c) => c.index),
      [0, 1, 2],
    );
    assert.deepEqual(
      a.choices.map((c) => c.text),
      b.choices.map((c) => c.text),
    );
    const full = ref["once pirate"]!;
    const cut = await api.completions.create({
      model: "pirate",
      prompt: "once",
      max_tokens: 20,
      temperature: 0,
      stop: ["tey"],
    });
    assert.equal(cut.choices[0]!.text, full.slice(0, full.indexOf("tey")));
    assert.equal(cut.choices[0]!.finish_reason, "stop");
    let streamed = "";
    for await (const ch of await api.completions.create({
      model: "pirate",
      prompt: "once",
      max_tokens: 20,
      temperature: 0,
      stop: "tey",
      stream: true,
    }))
      streamed += ch.choices[0]!.text;
    assert.equal(streamed, cut.choices[0]!.text);
  });

  it("loads and unloads adapters at run time, inside --adapter-dir only", async () => {
    const dir = join(scratch, "adapters");
    cpSync(join(fx, "robot"), join(dir, "robot2"), { recursive: true });
    const load = (lora_name: string, lora_path: string) =>
      post(s, "/v1/load_lora_adapter", JSON.stringify({ lora_name, lora_path }));
    assert.equal((await load("robot2", "robot2")).status, 200);
    const c = await api.completions.create({
      model: "robot2",
      prompt: "once",
      max_tokens: 20,
      temperature: 0,
    });
    assert.equal(c.choices[0]!.text, ref["once robot"]);
    assert.ok((await api.models.list()).data.some((m) => m.id === "robot2"));
    assert.equal((await load("robot2", "robot2")).status, 400, "a name in use");

    // path safety: traversal, an absolute path outside, a symlinked folder and a symlinked file out
    const outside = join(scratch, "outside");
    cpSync(join(fx, "pirate"), outside, { recursive: true });
    symlinkSync(outside, join(dir, "link"));
    mkdirSync(join(dir, "half"));
    cpSync(join(fx, "pirate", "adapter_config.json"), join(dir, "half", "adapter_config.json"));
    symlinkSync(join(outside, "adapter_model.safetensors"), join(dir, "half", "adapter_model.safetensors"));
    for (const [path, why] of [
      ["../outside", /outside the adapter folder/],
      ["robot2/../../outside", /outside the adapter folder/],
      [outside, /outside the adapter folder/],
      ["/etc", /outside the adapter folder/],
      ["link", /symbolic link/],
      ["half", /linking outside/],
    ] as const) {
      const r = await load("x", path);
      const body = (await r.json()) as { error: { message: string; param: string } };
      assert.equal(r.status, 400, path);
      assert.match(body.error.message, why, path);
      assert.equal(body.error.param, "lora_path");
    }
    assert.equal((await load("x", "nothing-here")).status, 404);
    assert.ok(!(await api.models.list()).data.some((m) => m.id === "x"));

    const unload = (lora_name: string) => post(s, "/v1/unload_lora_adapter", JSON.stringify({ lora_name }));
    assert.equal((await unload("robot2")).status, 200);
    const gone = await refused(api.completions.create({ model: "robot2", prompt: "once", max_tokens: 2 }));
    assert.equal(gone.status, 404);
    assert.equal((await unload("robot2")).status, 404);
  });

  it("refuses bad requests with OpenAI-shaped errors and the right status", async () => {
    const unknown = await refused(api.completions.create({ model: "nope", prompt: "once", max_tokens: 2 }));
    assert.equal(unknown.status, 404);
    assert.match(unknown.error.message as string, /Known models: model, pirate, robot/);
    assert.deepEqual(Object.keys(unknown.error).sort(), ["code", "message", "param", "type"]);

    assert.equal((await refused(client(s, "wrong").models.list())).status, 401);
    const long = "a".repeat(80); // the context is 64
    const ctx = await refused(api.completions.create({ model: "model", prompt: long, max_tokens: 2 }));
    assert.equal(ctx.status, 400);
    assert.equal(ctx.error.code, "context_length_exceeded");
    const over = await refused(api.completions.create({ model: "model", prompt: "once", max_tokens: 60 }));
    assert.equal(over.status, 400);
    assert.equal(over.error.param, "max_tokens");
    for (const bad of [{ temperature: -1 }, { top_p: 0 }, { n: 0 }, { stop: 3 }, { max_tokens: 0 }]) {
      const r = await refused(api.completions.create({ model: "model", prompt: "once", ...bad } as never));
      assert.equal(r.status, 400, JSON.stringify(bad));
      assert.equal(r.error.param, Object.keys(bad)[0]);
    }
    const many = await refused(api.completions.create({ model: "model", prompt: ["a", "b", "c"], n: 6 }));
    assert.equal(many.status, 400);
    assert.equal(many.error.param, "n");
    const chat = await refused(api.chat.completions.create({ model: "model", messages: [] }));
    assert.equal(chat.status, 400);
    assert.equal((await post(s, "/v1/completions", "{not json")).status, 400);
    const big = await post(
      s,
      "/v1/completions",
      JSON.stringify({ model: "model", prompt: "a".repeat(70_000) }),
    );
    assert.equal(big.status, 413);
    assert.equal(((await big.json()) as { error: { code: string } }).error.code, "request_too_large");
    assert.equal(
      (await fetch(`${s.url}/v1/nothing`, { headers: { authorization: `Bearer ${KEY}` } })).status,
      404,
    );
    assert.equal((await fetch(`${s.url}/health`)).status, 200);
  });

  it("a client that disconnects frees its slot", async () => {
    const tokens = async () =>
      Number(/lora_generation_tokens_total (\d+)/.exec(await (await fetch(`${s.url}/metrics`)).text())![1]);
    const before = await tokens();
    const ctl = new AbortController();
    const st = await api.completions.create(
      { model: "pirate", prompt: "once", max_tokens: 40, temperature: 0, stream: true },
      { signal: ctl.signal },
    );
    for await (const _ of st) {
      ctl.abort();
      break;
    }
    for (let i = 0; i < 100 && s.serving.scheduler.active > 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(s.serving.scheduler.active, 0);
    const made = (await tokens()) - before;
    assert.ok(made < 40, `decoding stopped when the client left (${made} of 40 tokens made)`);
    // every sequence so far (finished, failed or dropped) gave its KV-cache region back
    assert.equal(s.serving.engine.kvPool.inUse, 0);
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    assert.match(metrics, /lora_kv_cache_positions\{state="in_use"\} 0\n/);
    const total = Number(/lora_kv_cache_positions\{state="total"\} (\d+)/.exec(metrics)?.[1]);
    assert.ok(total > 0, `the pool held the requests' caches (${total} positions)`);
  });
});

describe("lora serve limits", () => {
  it("a full queue is a 429; a draining server is a 503", async () => {
    const s = await start({ maxBatch: 1, maxQueue: 1 });
    // each decode step takes at least 3 ms, so the first request is still running (and the second
    // queued) when the third arrives, however fast this machine decodes the tiny model
    const decode = (s.serving.scheduler as unknown as { decode: { step(b: unknown[]): number[] } }).decode;
    const step = decode.step.bind(decode);
    decode.step = (batch) => {
      const until = performance.now() + 3;
      while (performance.now() < until);
      return step(batch);
    };
    const api = client(s);
    try {
      const long = { model: "model", prompt: "once", max_tokens: 40, temperature: 0 };
      const first = api.completions.create(long);
      await new Promise((r) => setTimeout(r, 20));
      const second = api.completions.create(long);
      await new Promise((r) => setTimeout(r, 20));
      const third = await refused(api.completions.create(long));
      assert.equal(third.status, 429);
      assert.equal(third.error.type, "rate_limit_error");
      const drained = s.serving.scheduler.drain();
      const late = await refused(api.completions.create(long));
      assert.equal(late.status, 503);
      assert.equal((await fetch(`${s.url}/health`)).status, 503);
      // what was in flight finishes
      assert.equal((await first).choices[0]!.finish_reason, "length");
      assert.equal((await second).usage!.completion_tokens, 40);
      await drained;
    } finally {
      await s.close();
    }
  });

  it("the CLI prints its URL and adapters, and SIGTERM drains in-flight requests then exits", async (t) => {
    const child = spawn(process.execPath, [
      CLI,
      "serve",
      "--model",
      MODEL,
      "--adapter",
      `pirate=${join(fx, "pirate")}`,
      "--port",
      "0",
    ]);
    // a failed assertion must not leave the server running (the suite would wait on it)
    t.after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    });
    let out = "";
    child.stdout.on("data", (b) => (out += b));
    const exited = new Promise<number | null>((r) => child.on("exit", r));
    // the three start-up lines may arrive in separate chunks: wait for the last one
    for (let i = 0; i < 300 && !/adapters: .*\n/.test(out); i++) await new Promise((r) => setTimeout(r, 20));
    const url = /(http:\/\/127\.0\.0\.1:\d+\/v1)/.exec(out)?.[1];
    assert.ok(url, out);
    assert.match(out, /adapters: pirate/);
    const api = new OpenAI({ baseURL: url, apiKey: "none", maxRetries: 0 });
    const body = { model: "pirate", prompt: "once", max_tokens: 40, temperature: 0 };
    const pending = api.completions.create(body);
    await new Promise((r) => setTimeout(r, 30)); // let the server take it
    const streamed = (async () => {
      let text = "";
      let done = false;
      let killed = false;
      for await (const ch of await api.completions.create({ ...body, stream: true })) {
        // SIGTERM as soon as decoding is under way: 39 tokens are still to come
        if (!killed) killed = child.kill("SIGTERM");
        text += ch.choices[0]!.text;
        done ||= ch.choices[0]!.finish_reason !== null;
      }
      return { text, done };
    })();
    const c = await pending;
    const want = cliGenerate("once", "pirate", false, 40);
    assert.equal(c.choices[0]!.text, want);
    assert.deepEqual(await streamed, { text: want, done: true });
    assert.equal(await exited, 0);
    // the streamed request may already have ended when the signal lands on a fast machine
    assert.match(out, /SIGTERM: draining \d+ request/);
  });
});
