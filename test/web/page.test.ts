/**
 * The web page in real Chromium (Debian's /usr/bin/chromium, driven by playwright-core): `npm run web`
 * builds and serves it; the demo trains a few steps; the downloaded adapter is byte-identical to
 * `lora train` with the same settings and seed on the same backend (wasm, one thread); a run stopped
 * and resumed after a page reload ends with the same adapter as an uninterrupted one. Skips, saying
 * so, where Chromium is not installed. UPDATE_SCREENSHOT=1 saves the mid-run screenshot the README shows.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { unzipSync } from "fflate";
import { buildModel, modelFamily } from "../../src/models/index.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { CLI, repoRoot, sharedData } from "../helpers.js";

/** The page's document, as the functions that run in the page see it (the Node build has no DOM types). */
declare const document: { querySelector(selector: string): { textContent: string | null } | null };

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const missing = existsSync(CHROMIUM)
  ? null
  : `skipped: no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM=/path/to/chromium)`;

const tmp = mkdtempSync(join(tmpdir(), "lora-web-"));
/** npm start's settings, which the demo button fills in (web/src/main.ts), as `lora train` flags. */
const DEMO_FLAGS = [
  "--rank",
  "8",
  "--alpha",
  "16",
  "--lr",
  "0.003",
  "--batch-size",
  "8",
  "--targets",
  "all-linear",
];
/** Kept short so the test takes seconds: rows cut to 32 tokens, held-out loss on 8 rows at the start and end. */
const SHORT = { "seq-len": "32", "val-batches": "1", "eval-every": "0" };
const SHORT_FLAGS = Object.entries(SHORT).flatMap(([k, v]) => [`--${k}`, v]);

const freePort = () =>
  new Promise<number>((res) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });

/** `npm run web` on a free port: resolves with the URL it prints. */
async function serve(): Promise<{ url: string; proc: ChildProcess }> {
  const port = await freePort();
  const proc = spawn("npm", ["run", "web", "--", "--port", String(port), "--strictPort"], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
    detached: true,
  });
  let out = "";
  const url = await new Promise<string>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`npm run web printed no URL in 60 s:\n${out}`)), 60_000);
    const read = (b: Buffer) => {
      out += b.toString();
      const m = /http:\/\/127\.0\.0\.1:\d+\/?/.exec(out);
      if (m) {
        clearTimeout(t);
        res(m[0]);
      }
    };
    proc.stdout!.on("data", read);
    proc.stderr!.on("data", read);
    proc.on("exit", (code) => rej(new Error(`npm run web exited (${code}):\n${out}`)));
  });
  return { url, proc };
}

/** What a `lora train` run gave: its folder, adapter and training rate. */
interface CliRun {
  dir: string;
  config: Record<string, unknown>;
  weights: Buffer;
  tokensPerS: number;
}

/** The adapter `lora train` writes on the demo with these steps (wasm backend, one thread), run in the background. */
function cliAdapter(
  name: string,
  steps: number,
  data: string[] = ["--model", join(repoRoot, "assets/base-model"), "--data", join(repoRoot, "assets/task")],
): Promise<CliRun> {
  const out = join(tmp, name);
  const args = ["train", ...data];
  args.push(
    "--out",
    out,
    "--steps",
    String(steps),
    ...DEMO_FLAGS,
    ...SHORT_FLAGS,
    "--backend",
    "wasm",
    "--threads",
    "1",
  );
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    let log = "";
    p.stdout.on("data", (b: Buffer) => {
      log += b.toString();
    });
    p.stderr.on("data", (b: Buffer) => {
      err += b.toString();
    });
    p.on("exit", (code) => {
      if (code !== 0) return rej(new Error(`lora ${args.join(" ")} exited with ${code}:\n${err}`));
      res({
        dir: out,
        tokensPerS: Number(/\(([\d,]+) tokens\/s;/.exec(log)?.[1]?.replaceAll(",", "")),
        config: JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")),
        weights: readFileSync(join(out, "adapter_model.safetensors")),
      });
    });
  });
}

describe("the web page in Chromium", { skip: missing ?? false, timeout: 120_000 }, () => {
  let server: { url: string; proc: ChildProcess };
  // biome-ignore lint/suspicious/noExplicitAny: playwright-core is loaded only when Chromium exists
  let browser: any;
  // biome-ignore lint/suspicious/noExplicitAny: see above
  let page: any;

  let cli3: ReturnType<typeof cliAdapter>;
  let cli6: ReturnType<typeof cliAdapter>;

  before(async () => {
    cli3 = cliAdapter("cli-3", 3);
    cli6 = cli3.then(() => cliAdapter("cli-6", 6));
    cli6.catch(() => {}); // awaited by its test
    server = await serve();
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-background-networking"],
    });
    const context = await browser.newContext({
      acceptDownloads: true,
      viewport: { width: 1024, height: 1200 },
    });
    page = await context.newPage();
    page.on("pageerror", (e: Error) => console.error(`page error: ${e.message}`));
    await page.goto(server.url);
  });
  after(async () => {
    await browser?.close();
    if (server?.proc.pid) process.kill(-server.proc.pid);
    rmSync(tmp, { recursive: true, force: true });
  });

  const status = () => page.getByTestId("status");
  const waitStatus = async (re: RegExp, timeout = 60_000) => {
    await page.waitForFunction(
      ([src, flags]: [string, string]) => {
        const t = document.querySelector('[data-testid="status"]')?.textContent ?? "";
        return new RegExp(src, flags).test(t) || t.startsWith("error:");
      },
      [re.source, re.flags],
      { timeout },
    );
    const text = (await status().textContent()) as string;
    assert.match(text, re, `the page's status: ${text}`);
  };
  const openDemo = async (steps: number, saveEvery?: number) => {
    await page.getByTestId("use-demo").click();
    await waitStatus(/ready/);
    await page.getByTestId("steps").fill(String(steps));
    for (const [k, v] of Object.entries(SHORT)) await page.getByTestId(k).fill(v);
    if (saveEvery) await page.getByTestId("save-every").fill(String(saveEvery));
  };
  const downloadAdapter = async (): Promise<Record<string, Uint8Array>> => {
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByTestId("download-adapter").click(),
    ]);
    const path = join(tmp, `adapter-${Date.now()}.zip`);
    await download.saveAs(path);
    return unzipSync(readFileSync(path));
  };
  const sameAsCli = (zip: Record<string, Uint8Array>, cli: Awaited<ReturnType<typeof cliAdapter>>) => {
    assert.deepEqual(Object.keys(zip).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
    assert.ok(
      Buffer.from(zip["adapter_model.safetensors"]!).equals(cli.weights),
      "the page's adapter_model.safetensors differs from lora train's",
    );
    // base_model_name_or_path names the model as each shell was given it (a folder name, a path)
    const config = JSON.parse(new TextDecoder().decode(zip["adapter_config.json"]));
    assert.equal(config.base_model_name_or_path, "assets/base-model");
    assert.deepEqual(
      { ...config, base_model_name_or_path: null },
      { ...cli.config, base_model_name_or_path: null },
    );
  };

  it("says how many threads it trains on, and shows PEFT's trainable-parameter line", async () => {
    await openDemo(3);
    // the CLI's wasm backend on Node 20 turns relaxed SIMD on (kernels/wasm/node/relaxed-flag.ts), and the
    // byte comparisons below need the page on the same variant: Chromium has relaxed SIMD by default
    assert.match(
      (await page.getByTestId("threads").textContent()) as string,
      /1 thread \(WebAssembly relaxed-SIMD FMA; the page is cross-origin isolated/,
    );
    await page.waitForFunction(() =>
      /trainable params: [\d,]+ \|\| all params/.test(
        document.querySelector('[data-testid="param-line"]')?.textContent ?? "",
      ),
    );
  });

  it("trains the demo a few steps; the adapter equals lora train's, byte for byte, and the merged model lora merge's", async (t) => {
    await page.getByTestId("train").click();
    await waitStatus(/done/);
    for (const id of ["sample-before", "sample-after", "val-before", "val-after"])
      assert.notEqual(((await page.getByTestId(id).textContent()) as string).trim(), "–", `${id} is empty`);
    const before = Number(await page.getByTestId("val-before").textContent());
    const afterLoss = Number(await page.getByTestId("val-after").textContent());
    assert.ok(afterLoss < before, `held-out loss ${before} -> ${afterLoss} did not fall`);
    const cli = await cli3;
    sameAsCli(await downloadAdapter(), cli);
    const progress = (await page.getByTestId("progress").textContent()) as string;
    const pageRate = Number(/([\d,]+) tokens\/s/.exec(progress)?.[1]?.replaceAll(",", ""));
    t.diagnostic(
      `tokens/s, demo, seq-len 32, batch 8, one wasm thread: page ${pageRate}, lora train ${cli.tokensPerS}`,
    );
    assert.ok(pageRate > 0 && cli.tokensPerS > 0, `rates: page ${pageRate}, lora train ${cli.tokensPerS}`);

    // the merged model: the same weights as lora merge of lora train's adapter
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByTestId("download-merged").click(),
    ]);
    const zipPath = join(tmp, "merged.zip");
    await download.saveAs(zipPath);
    const merged = unzipSync(readFileSync(zipPath));
    assert.deepEqual(Object.keys(merged).sort(), [
      "config.json",
      "model.safetensors",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    const out = join(tmp, "cli-merged");
    const r = spawnSync(
      process.execPath,
      [
        CLI,
        "merge",
        "--model",
        join(repoRoot, "assets/base-model"),
        "--adapter",
        cli.dir,
        "--out",
        out,
        "--backend",
        "wasm",
        "--threads",
        "1",
      ],
      { encoding: "utf8" },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.ok(
      Buffer.from(merged["model.safetensors"]!).equals(readFileSync(join(out, "model.safetensors"))),
      "the page's merged model.safetensors differs from lora merge's",
    );
    assert.deepEqual(
      JSON.parse(new TextDecoder().decode(merged["config.json"])),
      JSON.parse(readFileSync(join(out, "config.json"), "utf8")),
    );
  });

  it("stops, and after a reload resumes from OPFS to the uninterrupted run's adapter", async () => {
    await openDemo(6, 2);
    await page.getByTestId("train").click();
    await page.waitForFunction(
      () => /step 3 of/.test(document.querySelector('[data-testid="status"]')?.textContent ?? ""),
      null,
      { timeout: 60_000 },
    );
    if (process.env.UPDATE_SCREENSHOT === "1")
      writeFileSync(join(repoRoot, "docs/web-page.png"), await page.screenshot({ fullPage: true }));
    await page.getByTestId("stop").click();
    await waitStatus(/stopped/);
    await page.reload();
    await page.getByTestId("use-demo").click();
    await waitStatus(/stored run of this model is at step [24]/);
    await page.getByTestId("steps").fill("6");
    for (const [k, v] of Object.entries(SHORT)) await page.getByTestId(k).fill(v);
    await page.getByTestId("save-every").fill("2");
    await page.getByTestId("train").click();
    await waitStatus(/done/);
    sameAsCli(await downloadAdapter(), await cli6);
  });

  it("trains a model folder and a text file given through the inputs; lora eval scores its adapter as the page did", async (t) => {
    const model = sharedData("stories260K-hf");
    const text = sharedData("tinyshakespeare/input.txt");
    if (!model || !text)
      return t.skip("skipped: ../shared/data (stories260K-hf, tinyshakespeare) is absent on this machine");
    // 40 documents; the page holds out the last tenth of a single file, so lora train gets the same split as two files
    const docs = readFileSync(text, "utf8")
      .split(/\n\s*\n/)
      .slice(0, 40);
    writeFileSync(join(tmp, "speeches.txt"), docs.join("\n\n"));
    writeFileSync(join(tmp, "train.txt"), docs.slice(0, 36).join("\n\n"));
    writeFileSync(join(tmp, "valid.txt"), docs.slice(36).join("\n\n"));
    const cli = cliAdapter("cli-stories", 3, [
      "--model",
      model,
      "--data",
      join(tmp, "train.txt"),
      "--val-data",
      join(tmp, "valid.txt"),
    ]);
    await page.getByTestId("model-input").setInputFiles(model);
    await page.getByTestId("data-input").setInputFiles(join(tmp, "speeches.txt"));
    await page.waitForFunction(
      () =>
        /36 training rows, 4 held-out rows/.test(
          document.querySelector('[data-testid="summary"]')?.textContent ?? "",
        ),
      null,
      { timeout: 30_000 },
    );
    for (const [k, v] of Object.entries({ ...SHORT, steps: "3", "save-every": "100" }))
      await page.getByTestId(k).fill(v);
    for (let i = 0; i < DEMO_FLAGS.length; i += 2)
      await page.getByTestId(DEMO_FLAGS[i]!.slice(2)).fill(DEMO_FLAGS[i + 1]!);
    await page.getByTestId("train").click();
    await waitStatus(/done/);
    const zip = await downloadAdapter();
    const done = await cli;
    assert.ok(
      Buffer.from(zip["adapter_model.safetensors"]!).equals(done.weights),
      "the page's adapter_model.safetensors differs from lora train's",
    );
    const dir = join(tmp, "page-stories");
    mkdirSync(dir);
    for (const [f, data] of Object.entries(zip)) writeFileSync(join(dir, f), data);
    const r = spawnSync(
      process.execPath,
      [
        CLI,
        "eval",
        "--model",
        model,
        "--adapter",
        dir,
        "--data",
        join(tmp, "valid.txt"),
        "--seq-len",
        "32",
        "--json",
      ],
      { encoding: "utf8" },
    );
    assert.equal(r.status, 0, r.stderr);
    const evalLoss = (JSON.parse(r.stdout) as { loss: number }).loss;
    const pageLoss = Number(await page.getByTestId("val-after").textContent());
    // the page shows 4 decimals (±5e-5); the two scorings of the same rows agree to f32 summation order
    assert.ok(Math.abs(evalLoss - pageLoss) < 5e-5 + 1e-4, `lora eval ${evalLoss}, the page ${pageLoss}`);
  });

  it("refuses bad input with a message on the page: no config.json, an unsupported model_type, no usable row, a model too large for the tab", async () => {
    const folder = (name: string, files: Record<string, string | Buffer>) => {
      const dir = join(tmp, name);
      mkdirSync(dir, { recursive: true });
      for (const [f, data] of Object.entries(files)) writeFileSync(join(dir, f), data);
      return dir;
    };
    // waits for the text, and on a timeout says what the page shows instead
    const text = async (id: string, re: RegExp) => {
      const waited = await page
        .waitForFunction(
          ([sel, src]: [string, string]) =>
            new RegExp(src).test(document.querySelector(sel)?.textContent ?? ""),
          [`[data-testid="${id}"]`, re.source],
          { timeout: 60_000 },
        )
        .then(
          () => true,
          () => false,
        );
      if (!waited) assert.match((await page.getByTestId(id).textContent()) ?? "", re, `the page's ${id}`);
    };
    // a fresh page: the folder and file the previous test picked would otherwise open with this test's first pick
    await page.reload();
    const demo = join(repoRoot, "assets/base-model");
    const real = (f: string) => readFileSync(join(demo, f));
    writeFileSync(join(tmp, "two.txt"), "one\n\ntwo\n");
    await page.getByTestId("data-input").setInputFiles(join(tmp, "two.txt"));
    await page
      .getByTestId("model-input")
      .setInputFiles(folder("no-config", { "tokenizer.json": real("tokenizer.json") }));
    await text("status", /^error: no-config: no config\.json/);

    const bert = { ...JSON.parse(real("config.json").toString()), model_type: "bert" };
    await page.getByTestId("model-input").setInputFiles(
      folder("bert", {
        "config.json": JSON.stringify(bert),
        "model.safetensors": real("model.safetensors"),
        "tokenizer.json": real("tokenizer.json"),
      }),
    );
    await text("status", /^error: .*model_type "bert" is not supported/);

    // rows of one token each have nothing to predict
    const ones = Array.from({ length: 3 }, () => JSON.stringify({ input_ids: [5] })).join("\n");
    writeFileSync(join(tmp, "ones.jsonl"), ones);
    await page.getByTestId("model-input").setInputFiles(demo);
    await page.getByTestId("data-input").setInputFiles(join(tmp, "ones.jsonl"));
    await text("summary", /2 training rows, 1 held-out rows/);
    await page.getByTestId("train").click();
    await text("status", /^error: the training data has no usable row/);

    // too large for the tab: the header's shapes fit config.json, and the estimate refuses it before any
    // weight is read (the weights file is sparse: its data is never there)
    const big = {
      ...JSON.parse(real("config.json").toString()),
      hidden_size: 4096,
      intermediate_size: 11008,
    };
    Object.assign(big, {
      num_attention_heads: 32,
      num_key_value_heads: 32,
      head_dim: 128,
      num_hidden_layers: 6,
    });
    const rules = modelFamily(big).checkpoint;
    const header: Record<string, unknown> = {};
    let offset = 0;
    buildModel(big, (name, shape) => {
      const bytes = shape.reduce((a, b) => a * b, 1) * 4;
      header[rules.names(name)[0]!] = { dtype: "F32", shape, data_offsets: [offset, offset + bytes] };
      offset += bytes;
      return new Tensor(
        new Float32Array(0),
        shape.map(() => 0),
      );
    });
    let json = JSON.stringify(header);
    json += " ".repeat((8 - (json.length % 8)) % 8);
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(json.length));
    const bigDir = folder("big", {
      "config.json": JSON.stringify(big),
      "model.safetensors": Buffer.concat([prefix, Buffer.from(json)]),
      "tokenizer.json": real("tokenizer.json"),
    });
    truncateSync(join(bigDir, "model.safetensors"), 8 + json.length + offset);
    await page.getByTestId("model-input").setInputFiles(bigDir);
    await text(
      "status",
      /^error: big: the model's \d+ parameters need [\d.]+ GiB as f32, more than this machine's/,
    );

    // and the page still works
    await page.getByTestId("use-demo").click();
    await text("status", /^ready/);
  });
});
