/**
 * `npm run test:llamacpp`: adapters from `lora train`, exported by `lora export --format gguf`, run in the
 * real llama.cpp (node-llama-cpp 3.21.1, prebuilt binaries) and compared with `lora generate` token for
 * token. Opt-in (not part of `npm test`): node-llama-cpp is ~700 MB, so it is installed once into a
 * cache folder outside the repository and its lockfile (LORA_LLAMACPP_CACHE, default
 * ~/.cache/lora-ts/llamacpp). Needs ../shared/data (stories260K); without it, it says so and stops.
 *
 * For each case: greedy continuation of the same prompt ids in both, ours from the HF folder (or the
 * GGUF file) with the PEFT adapter, llama.cpp's from the GGUF model with the GGUF adapter; every token
 * must agree, the base model alone must continue differently, and the largest difference of the two
 * next-token distributions over every step is printed (llama.cpp keeps its KV cache in f16).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { noGrad, softmax } from "../../src/autograd/index.js";
import { loadModel } from "../../src/cli/load.js";
import { generate } from "../../src/models/generate.js";

const VERSION = "3.21.1";
const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const CLI = join(root, "dist/src/cli/main.js");
const shared = resolve(root, "../shared/data");
const cache = process.env.LORA_LLAMACPP_CACHE ?? join(homedir(), ".cache/lora-ts/llamacpp");
/** Greedy tokens compared per prompt (GPT-2's fixture has 32 positions in all: 24 there). */
const STEPS = 32;

// The small part of node-llama-cpp's API used here.
interface Sequence {
  evaluateWithMetadata(
    tokens: number[],
    metadata: { probabilities: true },
    options: { temperature: number; repeatPenalty: false },
  ): AsyncGenerator<{ token: number; probabilities: Map<number, number> }>;
}
interface Context {
  getSequence(): Sequence;
  dispose(): Promise<void>;
}
interface Model {
  tokens: { bos: number };
  tokenize(text: string, special: boolean): number[];
  detokenize(tokens: number[]): string;
  createContext(o: Record<string, unknown>): Promise<Context>;
}
interface Llama {
  loadModel(o: { modelPath: string }): Promise<Model>;
}

function installed(): string | null {
  const pkg = join(cache, "node_modules/node-llama-cpp/package.json");
  return existsSync(pkg) ? (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version : null;
}

async function nodeLlamaCpp(): Promise<{ getLlama: (o: Record<string, unknown>) => Promise<Llama> }> {
  if (installed() !== VERSION) {
    console.log(`installing node-llama-cpp@${VERSION} into ${cache} (once; about 700 MB)`);
    mkdirSync(cache, { recursive: true });
    execFileSync(
      "npm",
      ["install", "--prefix", cache, "--no-audit", "--no-fund", `node-llama-cpp@${VERSION}`],
      {
        stdio: "inherit",
      },
    );
  }
  return import(pathToFileURL(join(cache, "node_modules/node-llama-cpp/dist/index.js")).href);
}

function lora(...args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`lora ${args.join(" ")} failed (${r.status}):\n${r.stderr}`);
  return r.stdout;
}

/** Our greedy ids and the next-token distribution before each of them (loaded as `lora generate` loads). */
function ours(model: string, adapter: string | null, prompt: number[], steps = STEPS) {
  const { model: m } = loadModel(model, adapter ?? undefined);
  const ids = [...generate(m, prompt, { maxTokens: steps, temperature: 0, stopIds: [] })];
  const all = [...prompt, ...ids];
  const logits = noGrad(() => m.forward(Int32Array.from(all), [1, all.length]));
  const V = m.vocabSize;
  const p = noGrad(() => softmax(logits)).data;
  const probs = ids.map((_, i) => p.subarray((prompt.length - 1 + i) * V, (prompt.length + i) * V));
  return { ids, probs };
}

async function theirs(
  model: Model,
  adapter: string | null,
  prompt: number[],
  contextSize: number,
  steps = STEPS,
) {
  const lora = adapter ? { lora: { adapters: [{ filePath: adapter, scale: 1 }] } } : {};
  const ctx = await model.createContext({ contextSize, threads: 1, ...lora });
  const ids: number[] = [];
  const probs: Map<number, number>[] = [];
  const seq = ctx.getSequence();
  for await (const o of seq.evaluateWithMetadata(
    prompt,
    { probabilities: true },
    { temperature: 0, repeatPenalty: false },
  )) {
    ids.push(o.token);
    probs.push(o.probabilities);
    if (ids.length >= steps) break;
  }
  await ctx.dispose();
  return { ids, probs };
}

const maxDiff = (a: Float32Array[], b: Map<number, number>[]) => {
  let worst = 0;
  a.forEach((p, i) => {
    for (let t = 0; t < p.length; t++) worst = Math.max(worst, Math.abs(p[t]! - (b[i]!.get(t) ?? 0)));
  });
  return worst;
};

/** The prompt's ids by the model's tokenizer (a folder's tokenizer.json, or a GGUF's metadata). */
const encode = (model: string, text: string) =>
  loadModel(model, undefined, { needTokenizer: true }).tokenizer!.encode(text);

interface Case {
  name: string;
  /** What `lora generate` and our library load. */
  model: string;
  /** The GGUF llama.cpp loads. */
  gguf: string;
  adapter: string;
  ggufAdapter: string;
  prompts: { text?: string; ids?: number[] }[];
  contextSize: number;
  steps: number;
}

const failures: string[] = [];
const check = (ok: boolean, what: string) => {
  if (!ok) failures.push(what);
  return ok ? "yes" : "NO";
};

async function run(llama: Llama, c: Case) {
  const model = await llama.loadModel({ modelPath: c.gguf });
  for (const p of c.prompts) {
    const prompt = p.ids ?? encode(c.model, p.text!);
    if (p.text !== undefined) {
      const llamaPrompt = [model.tokens.bos, ...model.tokenize(p.text, false)];
      check(JSON.stringify(llamaPrompt) === JSON.stringify(prompt), `${c.name}: prompt ids differ`);
    }
    const a = ours(c.model, c.adapter, prompt, c.steps);
    const b = await theirs(model, c.ggufAdapter, prompt, c.contextSize, c.steps);
    const base = await theirs(model, null, prompt, c.contextSize, c.steps);
    const same = a.ids.filter((t, i) => t === b.ids[i]).length;
    const label = p.text !== undefined ? JSON.stringify(p.text) : `ids [${prompt.join(", ")}]`;
    console.log(`\n${c.name}, prompt ${label}`);
    console.log(`  lora generate: ${JSON.stringify(a.ids)}`);
    console.log(`  llama.cpp:     ${JSON.stringify(b.ids)}`);
    console.log(`  base only:     ${JSON.stringify(base.ids)}`);
    if (p.text !== undefined) {
      const text = lora(
        "generate",
        ...["--model", c.model, "--adapter", c.adapter, "--prompt", p.text],
        ...["--max-tokens", String(c.steps), "--temperature", "0", "--no-stop"],
      ).replace(/\n$/, "");
      console.log(`  lora generate text: ${JSON.stringify(text)}`);
      console.log(`  llama.cpp text:     ${JSON.stringify(p.text + model.detokenize(b.ids))}`);
      check(text === p.text + model.detokenize(b.ids), `${c.name}: the CLI's text differs from llama.cpp's`);
    }
    const equal = check(same === c.steps, `${c.name} ${label}: ${same}/${c.steps} tokens agree`);
    const differs = check(
      JSON.stringify(base.ids) !== JSON.stringify(b.ids),
      `${c.name} ${label}: the base model alone gives the same tokens (the adapter changes nothing)`,
    );
    const d = maxDiff(a.probs, b.probs);
    const dBase = maxDiff(a.probs, base.probs);
    check(d < 1e-2, `${c.name} ${label}: next-token probabilities differ by ${d}`);
    console.log(
      `  ${same}/${c.steps} tokens equal: ${equal}; base differs: ${differs}; max |p(lora) - p(llama.cpp)| ${d.toExponential(1)} (vs base only ${dBase.toExponential(1)})`,
    );
  }
}

async function main() {
  const hf = join(shared, "stories260K-hf");
  const ggufModel = join(shared, "stories260K", "stories260K.gguf");
  if (!existsSync(hf) || !existsSync(ggufModel)) {
    console.log(
      `skipped: ${shared} (stories260K-hf and stories260K/stories260K.gguf) is absent on this machine`,
    );
    return;
  }
  const { getLlama } = await nodeLlamaCpp();
  const llama = await getLlama({ gpu: false, logLevel: "error" });
  const tmp = mkdtempSync(join(tmpdir(), "lora-llamacpp-"));
  try {
    const data = join(tmp, "shakespeare.txt");
    writeFileSync(data, readFileSync(join(shared, "tinyshakespeare", "input.txt"), "utf8").slice(0, 200_000));
    const train = (name: string, model: string, ...flags: string[]) => {
      const out = join(tmp, name);
      const t0 = Date.now();
      lora(
        "train",
        ...[
          "--model",
          model,
          "--data",
          data,
          "--out",
          out,
          "--pack",
          "--seq-len",
          "128",
          "--batch-size",
          "8",
        ],
        ...["--steps", "150", "--lr", "3e-3", "--eval-every", "0", "--save-every", "1000", "--seed", "1"],
        ...flags,
      );
      console.log(
        `trained ${name} (${flags.join(" ") || "default targets"}) in ${((Date.now() - t0) / 1000).toFixed(0)} s`,
      );
      return out;
    };
    const exported = (adapter: string, ...flags: string[]) => {
      const out = join(tmp, `${basename(adapter)}-${cases.length}.gguf`);
      process.stdout.write(lora("export", "--adapter", adapter, "--format", "gguf", "--out", out, ...flags));
      return out;
    };
    const prompts = [{ text: "Once upon a time" }, { text: "Tom and his dog" }];
    const all = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";
    const cases: Case[] = [];
    const stories = (name: string, adapter: string, model = hf) =>
      cases.push({
        name,
        model,
        gguf: ggufModel,
        adapter,
        ggufAdapter: exported(adapter),
        prompts,
        contextSize: 256,
        steps: STEPS,
      });
    stories("q,v (r 8, alpha 16)", train("qv", hf, "--rank", "8", "--alpha", "16"));
    stories("rsLoRA (r 8, alpha 4)", train("rslora", hf, "--rank", "8", "--alpha", "4", "--rslora"));
    const full = train("all", hf, "--rank", "8", "--alpha", "16", "--targets", all);
    stories("q,k,v,o,gate,up,down (r 8, alpha 16)", full);
    // alpha_pattern: llama.cpp has one alpha per file, so the export folds each module's scale into B
    const patterned = join(tmp, "all-alpha-pattern");
    cpSync(full, patterned, { recursive: true });
    const cfgPath = join(patterned, "adapter_config.json");
    const cfg = JSON.parse(readFileSync(cfgPath, "utf8"));
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, alpha_pattern: { v_proj: 40, down_proj: 6 } }, null, 2));
    stories("the same with alpha_pattern {v_proj: 40, down_proj: 6}", patterned);
    // the GGUF model itself: lora train --model stories260K.gguf, and lora generate --model it
    stories(
      "trained on the GGUF file (lora train --model stories260K.gguf)",
      train("gguf", ggufModel, "--rank", "8", "--alpha", "16", "--targets", all),
      ggufModel,
    );
    // GPT-2: Conv1D modules; the fixture model converted by llama.cpp's convert_hf_to_gguf.py
    const gpt2 = join(root, "test/fixtures/gguf-adapter/gpt2");
    const gpt2Prompts = [
      [0, 5, 9, 17],
      [3, 1, 4, 1, 5, 9],
      [40, 2, 33],
    ].map((ids) => ({ ids }));
    cases.push({
      name: "GPT-2 fixture, c_attn, c_proj, c_fc (PEFT-saved, random A and B)",
      model: join(root, "test/fixtures/models/gpt2"),
      gguf: join(gpt2, "model.gguf"),
      adapter: join(gpt2, "plain"),
      ggufAdapter: exported(join(gpt2, "plain"), "--model", join(root, "test/fixtures/models/gpt2")),
      prompts: gpt2Prompts,
      contextSize: 32,
      steps: 24,
    });
    for (const c of cases) await run(llama, c);
    // the base model from the GGUF file, no adapter: lora generate --model stories260K.gguf
    const base = await llama.loadModel({ modelPath: ggufModel });
    const prompt = encode(ggufModel, "Once upon a time");
    const a = ours(ggufModel, null, prompt);
    const b = await theirs(base, null, prompt, 256);
    const text = lora(
      "generate",
      ...[
        "--model",
        ggufModel,
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        String(STEPS),
        "--temperature",
        "0",
      ],
      "--no-stop",
    ).replace(/\n$/, "");
    console.log(`\nlora generate --model stories260K.gguf (no adapter), prompt "Once upon a time"`);
    console.log(`  lora generate: ${JSON.stringify(a.ids)}`);
    console.log(`  llama.cpp:     ${JSON.stringify(b.ids)}`);
    console.log(`  lora generate text: ${JSON.stringify(text)}`);
    const same = a.ids.filter((t, i) => t === b.ids[i]).length;
    check(same === STEPS, `GGUF base model: ${same}/${STEPS} tokens agree`);
    check(text === `Once upon a time${base.detokenize(b.ids)}`, "GGUF base model: the CLI's text differs");
    console.log(
      `  ${same}/${STEPS} tokens equal; max |p(lora) - p(llama.cpp)| ${maxDiff(a.probs, b.probs).toExponential(1)}`,
    );
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  if (failures.length > 0) {
    console.log(`\nFAILED (${failures.length}):\n${failures.map((f) => `  - ${f}`).join("\n")}`);
    process.exitCode = 1;
  } else console.log(`\nllama.cpp check passed: node-llama-cpp ${VERSION}`);
}

await main();
