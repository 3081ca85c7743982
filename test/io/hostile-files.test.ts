/**
 * Hostile model, adapter and data files (issue 20, items 3, 4, 6, 7 and the BOM of 10): each is refused
 * before it can give a wrong answer or exhaust the machine, with an error naming the file and the
 * problem. Cases that hung or ate memory before run in a child process with a time limit, so a
 * regression fails, not hangs.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { checkpointFiles, parseCheckpoint } from "../../src/io/checkpoint.js";
import { checkModelTensors } from "../../src/io/model-loader.js";
import { loadAdapter } from "../../src/io/node/adapter-folder.js";
import { readDataset } from "../../src/io/node/dataset-file.js";
import { readJson } from "../../src/io/node/json-file.js";
import { loadModelFolder } from "../../src/io/node/model-folder.js";
import { readModelWeightHeaders, readSafetensorsFile } from "../../src/io/node/safetensors-file.js";
import { loraConfigProblems, MAX_LORA_SCALE, parseAdapterConfig } from "../../src/io/peft.js";
import {
  duplicateJsonKeys,
  nonFiniteValues,
  parseSafetensors,
  type SerializableTensor,
  serializeSafetensors,
  tensorToFloat32,
} from "../../src/io/safetensors.js";
import { loraLayers } from "../../src/lora/inject.js";
import { encodeFromFloat32 } from "../../src/tensor/dtype.js";
import { fixturesDir, repoRoot } from "../helpers.js";

type Config = Record<string, unknown>;
type Tensors = Map<string, { dtype: "F32" | "F16" | "BF16" | "I32"; shape: number[]; data: Float32Array }>;

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(join(tmpdir(), "lora-ts-hostile-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function writeTensors(path: string, tensors: Tensors): void {
  const list: SerializableTensor[] = [...tensors].map(([name, t]) => ({
    name,
    dtype: t.dtype,
    shape: t.shape,
    data: t.dtype === "I32" ? new Uint8Array(Int32Array.from(t.data).buffer) : t.data,
  }));
  fs.writeFileSync(path, serializeSafetensors(list, { format: "pt" }));
}

/** A copy of a fixture model folder (with its adapter), its config and tensors edited. */
function hostileModel(
  dir: string,
  { name = "llama_gqa_tied", config = (_c: Config) => {}, tensors = (_t: Tensors) => {} } = {},
): string {
  const out = join(dir, "model");
  fs.cpSync(join(fixturesDir, "models", name), out, { recursive: true });
  const c = readJson(join(out, "config.json"))!;
  config(c);
  fs.writeFileSync(join(out, "config.json"), JSON.stringify(c));
  const file = readSafetensorsFile(join(out, "model.safetensors"));
  const t: Tensors = new Map(
    [...file.tensors].map(([n, e]) => [
      n,
      { dtype: "F32", shape: e.shape, data: tensorToFloat32(e).slice() },
    ]),
  );
  tensors(t);
  writeTensors(join(out, "model.safetensors"), t);
  return out;
}

/** The message loading `dir` fails with (and that it fails). */
function loadError(dir: string, opts = {}): string {
  try {
    loadModelFolder(dir, opts);
  } catch (e) {
    return (e as Error).message;
  }
  return assert.fail(`${dir} loaded`);
}

/**
 * Runs an ES module snippet in a child process (imports resolve from dist/src), with a time limit: what
 * it printed, whether it finished in time, and its peak resident memory in MB.
 */
function child(code: string, timeoutMs = 20_000) {
  const dist = join(repoRoot, "dist/src").replaceAll("\\", "/");
  const script = `const src = ${JSON.stringify(`file://${dist}/`)};\n${code}\nconsole.log("maxrss", process.resourceUsage().maxRSS / 1024);`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    timeout: timeoutMs,
  });
  const rss = Number(/maxrss ([\d.]+)/.exec(r.stdout)?.[1] ?? Number.NaN);
  return { out: r.stdout, err: r.stderr, timedOut: r.error !== undefined || r.signal !== null, rss };
}

/** A child snippet that calls `call` (an expression using the imported `m`) and prints its error. */
const printError = (module: string, call: string) =>
  `{ const m = await import(src + ${JSON.stringify(module)});
try { ${call}; console.log("no error"); } catch (e) { console.log("error:", e.message); } }`;

describe("non-finite weights (item 3)", () => {
  it("nonFiniteValues finds NaN and ±Inf in F32, F16, BF16 and F64, aligned or not, and nothing else", () => {
    const values = [1, -0, 65504, 3.3e38, Number.NaN, 2, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY];
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      const bytes = encodeFromFloat32(new Float32Array(values), dtype);
      const f16 = dtype === "F16"; // 3.3e38 overflows f16 to Inf
      const want = { count: f16 ? 4 : 3, first: f16 ? 3 : 4 };
      assert.deepEqual(nonFiniteValues({ dtype, bytes }), want, dtype);
      const unaligned = new Uint8Array(bytes.length + 1);
      unaligned.set(bytes, 1);
      assert.deepEqual(nonFiniteValues({ dtype, bytes: unaligned.subarray(1) }), want, `${dtype} unaligned`);
      const finite = encodeFromFloat32(new Float32Array([1, -2, f16 ? 65504 : 3.3e38, 1e-40]), dtype);
      assert.equal(nonFiniteValues({ dtype, bytes: finite }), null, `${dtype} finite`);
    }
    const f64 = new Uint8Array(new Float64Array([1, 1.7e308, Number.NaN]).buffer);
    assert.deepEqual(nonFiniteValues({ dtype: "F64", bytes: f64 }), { count: 1, first: 2 });
    const ints = new Uint8Array(new Int32Array([-1, 0x7f800000]).buffer);
    assert.equal(nonFiniteValues({ dtype: "I32", bytes: ints }), null, "integers are never non-finite");
  });

  for (const dtype of ["F32", "F16", "BF16"] as const) {
    it(`a ${dtype} base weight holding NaN or Inf is refused at load, naming the tensor and the file`, (t) => {
      const dir = hostileModel(tempDir(t), {
        tensors: (ts) => {
          for (const e of ts.values()) e.dtype = dtype;
          const w = ts.get("model.layers.1.mlp.up_proj.weight")!;
          w.data[5] = Number.NaN;
          w.data[9] = Number.NEGATIVE_INFINITY;
        },
      });
      for (const baseDtype of ["f32", "bf16", "f16"] as const) {
        const msg = loadError(dir, { baseDtype });
        assert.match(msg, /the weights hold values that are not finite \(1 problem\)/);
        assert.ok(
          msg.includes(
            `tensor "model.layers.1.mlp.up_proj.weight" in ${join(dir, "model.safetensors")} holds 2 NaN or infinite values (the first at flat index 5)`,
          ),
          msg,
        );
        assert.match(msg, /re-download it/);
      }
    });
  }

  it("an adapter weight holding NaN is refused, naming the tensor and the adapter file", (t) => {
    const dir = hostileModel(tempDir(t));
    const weights = join(dir, "adapter", "adapter_model.safetensors");
    const key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    const file = readSafetensorsFile(weights);
    const ts: Tensors = new Map(
      [...file.tensors].map(([n, e]) => [
        n,
        { dtype: "BF16", shape: e.shape, data: tensorToFloat32(e).slice() },
      ]),
    );
    ts.get(key)!.data[3] = Number.POSITIVE_INFINITY;
    writeTensors(weights, ts);
    const { model } = loadModelFolder(dir);
    assert.throws(
      () => loadAdapter(model, join(dir, "adapter"), ["q_proj", "v_proj"]),
      (e: Error) => {
        assert.ok(e.message.startsWith(`${weights}: adapter weights are damaged (1 problem):`), e.message);
        assert.match(
          e.message,
          /"model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight" holds 1 NaN or infinite value \(the first at flat index 3\)/,
        );
        assert.match(e.message, /Use the adapter of an earlier checkpoint/);
        return true;
      },
    );
    assert.deepEqual(loraLayers(model), [], "the model was left unwrapped");
  });

  it("a checkpoint whose optimizer state holds NaN is refused on resume, naming the buffer", () => {
    const files = checkpointFiles(
      {
        step: 4,
        tokens: 100,
        elapsedS: 1,
        data: { epoch: 0, cursor: 4 },
        rng: null,
        optimizer: {
          kind: "adamw",
          step: 4,
          buffers: {
            "a.lora_A.weight": { m: new Float32Array([1, 2]), v: new Float32Array([3, Number.NaN]) },
          },
        },
      },
      {},
    );
    assert.throws(
      () =>
        parseCheckpoint(
          JSON.parse(files["trainer_state.json"] as string),
          parseSafetensors(files["optimizer.safetensors"] as Uint8Array, "optimizer.safetensors"),
          "run/checkpoints/step-4",
        ),
      {
        message:
          'run/checkpoints/step-4: optimizer.safetensors "a.lora_A.weight.v" holds 1 NaN or infinite value (the first at flat index 1): a diverged step was saved; resume from an earlier checkpoint',
      },
    );
  });
});

describe("impossible adapter configs (item 3)", () => {
  const base = { r: 8, lora_alpha: 16, target_modules: ["q_proj"] };
  const parse = (json: Config) => parseAdapterConfig(json, "run/adapter_config.json", ["q_proj"]);
  const fails = (json: Config, pattern: RegExp) =>
    assert.throws(
      () => parse(json),
      (e: Error) => e.message.startsWith("run/adapter_config.json: ") && pattern.test(e.message),
    );

  it("refuses an alpha whose scale is not finite or above MAX_LORA_SCALE, and impossible ranks", () => {
    fails(
      { ...base, lora_alpha: 1e308 },
      /the LoRA scale lora_alpha 1e\+308 \/ r 8 = 1\.25e\+307 is above 1000000/,
    );
    fails({ ...base, lora_alpha: 8e6 + 8 }, /is above 1000000/);
    assert.equal(parse({ ...base, lora_alpha: 8e6 }).lora_alpha, 8e6, "exactly the bound is accepted");
    fails({ ...base, r: 1, lora_alpha: 2e6, use_rslora: true }, /lora_alpha 2000000 \/ √r \(r 1\) = 2000000/);
    fails({ ...base, lora_alpha: 0 }, /lora_alpha must be a positive finite number, got 0/);
    fails(
      { ...base, lora_alpha: "16" },
      /lora_alpha must be a positive finite number, got "16" \(a string\)/,
    );
    fails({ ...base, r: 0 }, /r must be a positive integer, got 0/);
    fails({ ...base, r: -4 }, /r must be a positive integer, got -4/);
    fails({ ...base, r: 2.5 }, /r must be a positive integer, got 2\.5/);
    fails(
      { ...base, rank_pattern: { q_proj: 0 } },
      /rank_pattern "q_proj" must be a positive integer, got 0/,
    );
    fails({ ...base, r: 1, alpha_pattern: { q_proj: 1e7 } }, /lora_alpha 10000000 \/ r 1/);
    fails({ ...base, lora_dropout: 1 }, /lora_dropout must be in \[0, 1\), got 1/);
    assert.deepEqual(loraConfigProblems({ r: 8, lora_alpha: 16, lora_dropout: 0, use_rslora: false }), []);
    assert.equal(MAX_LORA_SCALE, 1e6);
  });

  it("config booleans must be JSON booleans, and every problem is listed at once", () => {
    fails(
      { ...base, use_rslora: "true" },
      /"use_rslora" must be true or false \(a JSON boolean\), got "true" \(a string\)/,
    );
    fails({ ...base, use_dora: "false" }, /"use_dora" must be true or false/);
    assert.throws(
      () => parse({ ...base, r: 0, lora_alpha: -1, fan_in_fan_out: 1 }),
      (e: Error) =>
        e.message.startsWith("run/adapter_config.json: 3 problems:\n") &&
        /"fan_in_fan_out" must be true or false/.test(e.message) &&
        /Fix the file or re-save the adapter\.$/.test(e.message),
    );
  });
});

describe("ids and tensors (item 4)", () => {
  it("a repeated tensor name in a header is refused, even written with escapes", () => {
    const entry = (begin: number) => `{"dtype":"F32","shape":[1],"data_offsets":[${begin},${begin + 4}]}`;
    const file = (json: string, data: number) => {
      const bytes = new TextEncoder().encode(json);
      const out = new Uint8Array(8 + bytes.length + data);
      new DataView(out.buffer).setUint32(0, bytes.length, true);
      out.set(bytes, 8);
      return out;
    };
    const cases: Array<[string, string]> = [
      [`{"w":${entry(0)},"w":${entry(4)}}`, "w"],
      [`{"a\\"b":${entry(0)},"x":${entry(4)},"a\\"b":${entry(8)}}`, 'a"b'],
      [`{"a":${entry(0)},"\\u0061":${entry(4)}}`, "a"],
    ];
    for (const [json, name] of cases) {
      assert.throws(
        () => parseSafetensors(file(json, 12), "dup.safetensors"),
        (e: Error) => e.message.includes(`tensor "${name}" is listed more than once`),
        json,
      );
    }
    // No false positives: escaped quotes and keys inside strings, arrays, and nested objects.
    const tricky = `{"__metadata__":{"note":"\\"w\\":{},\\"w\\":","w":"key of another object"},"w\\\\":${entry(0)},"w":${entry(4)}}`;
    assert.deepEqual(duplicateJsonKeys(tricky), []);
    assert.equal(parseSafetensors(file(tricky, 8), "ok").tensors.size, 2);
    assert.deepEqual(duplicateJsonKeys('{"a":{"dtype":1,"dtype":2},"b":[{"k":1},{"k":2}]}'), [
      { key: "dtype", within: "a" },
    ]);
  });

  it("an integer or BOOL tensor is refused as a weight, naming tensor and dtype", (t) => {
    const dir = hostileModel(tempDir(t), {
      tensors: (ts) => {
        ts.get("model.embed_tokens.weight")!.dtype = "I32";
      },
    });
    const msg = loadError(dir);
    assert.match(
      msg,
      /tensor "model\.embed_tokens\.weight" is stored as I32, but a weight must be a float \(F32, F16, BF16, F64\)/,
    );
  });

  it('tie_word_embeddings "false" (a string) is refused, not read as tied', (t) => {
    const dir = hostileModel(tempDir(t), {
      name: "llama_untied",
      config: (c) => {
        c.tie_word_embeddings = "false";
      },
    });
    assert.match(
      loadError(dir),
      /config\.json: "tie_word_embeddings" must be true or false \(a JSON boolean\), got "false" \(a string\); fix config\.json/,
    );
  });
});

describe("configs that would exhaust the machine (item 6)", () => {
  it("num_hidden_layers 1000000 over a 2-layer file fails at once, listing what is missing", (t) => {
    const dir = hostileModel(tempDir(t), {
      config: (c) => {
        c.num_hidden_layers = 1_000_000;
      },
    });
    const r = child(printError("io/node/model-folder.js", `m.loadModelFolder(${JSON.stringify(dir)})`));
    assert.ok(!r.timedOut, `timed out: ${r.err}`);
    assert.match(r.out, /the weights do not fit config\.json \(more than 1000 problems\)/);
    assert.match(r.out, /missing tensor "model\.layers\.2\.input_layernorm\.weight" \[32\]/);
    assert.match(r.out, /\.\.\. and at least 981 more/);
    assert.ok(r.rss < 500, `peak memory ${r.rss} MB`);
  });

  it("vocab_size 1e12 names the field, not 'Invalid typed array length'; a wrong size names the shapes", (t) => {
    const dir = hostileModel(tempDir(t), {
      config: (c) => {
        c.vocab_size = 1e12;
      },
    });
    const msg = loadError(dir);
    assert.match(
      msg,
      /config\.json: "vocab_size" must be a positive integer up to 2147483647, got 1000000000000/,
    );
    assert.doesNotMatch(msg, /Invalid typed array length/);
    const c = readJson(join(dir, "config.json"))!;
    fs.writeFileSync(join(dir, "config.json"), JSON.stringify({ ...c, vocab_size: 1e6 }));
    assert.match(
      loadError(dir),
      /tensor "model\.embed_tokens\.weight" has shape \[71, 32\], but config\.json implies \[1000000, 32\]/,
    );
  });

  it("a model bigger than the memory limit is refused before reading, with the numbers", (t) => {
    const dir = hostileModel(tempDir(t));
    const { tensors } = readModelWeightHeaders(dir);
    const config = readJson(join(dir, "config.json"))!;
    const size = checkModelTensors(config, tensors, dir);
    // embedding, 2 x (q, o [32, 32]; k, v [16, 32]; gate, up, down 32 x 48; two norms), final norm
    assert.equal(size.parameters, 71 * 32 + 2 * (2 * 32 * 32 + 2 * 16 * 32 + 3 * 32 * 48 + 2 * 32) + 32);
    assert.equal(size.bytes, size.parameters * 4);
    assert.throws(
      () => checkModelTensors(config, tensors, dir, { memoryLimit: 1000 }),
      new RegExp(
        `the model's ${size.parameters} parameters need 0\\.0679 MiB as f32, more than this machine's 0\\.000954 MiB of memory; store the base weights in bf16`,
      ),
    );
    const half = checkModelTensors(config, tensors, dir, { baseDtype: "bf16" });
    assert.ok(half.bytes < size.bytes);
  });

  it("every impossible config value is named, all at once", (t) => {
    const dir = hostileModel(tempDir(t), {
      config: (c) => {
        Object.assign(c, {
          rope_theta: -10000,
          rms_norm_eps: 0,
          hidden_size: 32.5,
          intermediate_size: "48",
          num_key_value_heads: 3,
          attention_bias: "false",
        });
      },
    });
    const msg = loadError(dir);
    assert.ok(msg.startsWith(`${join(dir, "config.json")}: 6 problems:\n`), msg);
    for (const needle of [
      "rope_theta must be a positive number, got -10000",
      '"rms_norm_eps" must be a positive finite number, got 0',
      '"hidden_size" must be a positive integer, got 32.5',
      '"intermediate_size" must be a positive integer, got "48" (a string)',
      "num_attention_heads 4 is not a multiple of num_key_value_heads 3",
      '"attention_bias" must be true or false',
    ])
      assert.ok(msg.includes(needle), `${needle} in\n${msg}`);
  });

  it("GPT-2: layer_norm_epsilon, sizes and n_head dividing n_embd", (t) => {
    const dir = hostileModel(tempDir(t), {
      name: "gpt2",
      config: (c) => {
        Object.assign(c, { layer_norm_epsilon: -1e-5, n_head: 5, n_positions: 0 });
      },
    });
    const msg = loadError(dir);
    for (const needle of [
      '"layer_norm_epsilon" must be a positive finite number, got -0.00001',
      '"n_positions" must be a positive integer, got 0',
      "n_embd 24 is not divisible by n_head 5",
    ])
      assert.ok(msg.includes(needle), `${needle} in\n${msg}`);
  });
});

describe("files (item 7)", () => {
  const mkfifo = (path: string) => spawnSync("mkfifo", [path]).status === 0;

  it("a FIFO, a folder or a device where a file belongs is refused at once, for every reader", (t) => {
    const dir = hostileModel(tempDir(t));
    const fifo = join(dir, "pipe");
    if (process.platform === "win32" || !mkfifo(fifo)) return t.skip("no mkfifo here");
    const swap = (name: string) => {
      const path = join(dir, name);
      fs.rmSync(path, { recursive: true, force: true });
      fs.symlinkSync(fifo, path);
      return path;
    };
    const weights = swap("model.safetensors");
    swap("tokenizer.json");
    fs.mkdirSync(join(dir, "data"));
    const data = join(dir, "data", "train.jsonl");
    fs.symlinkSync(fifo, data);
    const adapterConfig = join(dir, "adapter", "adapter_config.json");
    fs.rmSync(adapterConfig);
    fs.symlinkSync(fifo, adapterConfig);
    const calls = [
      ["io/node/safetensors-file.js", `m.readSafetensorsFile(${JSON.stringify(weights)})`],
      ["io/node/model-folder.js", `m.loadModelFolder(${JSON.stringify(dir)})`],
      ["io/node/tokenizer-file.js", `m.loadTokenizer(${JSON.stringify(dir)})`],
      ["io/node/dataset-file.js", `m.readDataset(${JSON.stringify(data)})`],
      ["io/node/dataset-file.js", `m.readDataset(${JSON.stringify(join(dir, "data"))})`],
      ["io/node/adapter-folder.js", `m.readAdapterConfig(${JSON.stringify(join(dir, "adapter"))}, [])`],
      ["io/node/json-file.js", 'm.readJson("/dev/zero")'],
    ];
    const r = child(calls.map(([mod, call]) => printError(mod!, call!)).join("\n"), 20_000);
    assert.ok(!r.timedOut, `a reader blocked: ${r.out}${r.err}`);
    const lines = r.out.split("\n").filter((l) => l.startsWith("error:") || l === "no error");
    assert.equal(lines.length, calls.length, r.out);
    for (const line of lines)
      assert.match(
        line,
        /: cannot read: it is a (named pipe \(FIFO\)|device), not a regular file; pass the file itself$/,
      );
    assert.ok(lines[0]!.includes(weights));
  });

  it("a 2 GiB file whose header is {} fails fast, reading only its header", (t) => {
    const dir = hostileModel(tempDir(t));
    const weights = join(dir, "model.safetensors");
    const header = Buffer.from("{}      ");
    const head = Buffer.alloc(8);
    head.writeUInt32LE(header.length, 0);
    fs.writeFileSync(weights, Buffer.concat([head, header]));
    fs.truncateSync(weights, 2 ** 31); // sparse: no disk used
    const start = Date.now();
    const r = child(printError("io/node/model-folder.js", `m.loadModelFolder(${JSON.stringify(dir)})`));
    assert.ok(!r.timedOut, r.err);
    assert.match(r.out, /the weights do not fit config\.json \(\d+ problems\)/);
    assert.match(r.out, /missing tensor "model\.embed_tokens\.weight" \[71, 32\]/);
    assert.ok(r.rss < 500, `peak memory ${r.rss} MB: the data was read`);
    assert.ok(Date.now() - start < 15_000);
  });

  it("a header length above 100 MB or past the file's end is refused before it is read", (t) => {
    const dir = tempDir(t);
    const path = join(dir, "big-header.safetensors");
    const head = Buffer.alloc(8);
    head.writeUInt32LE(200_000_000, 0);
    fs.writeFileSync(path, head);
    fs.truncateSync(path, 300_000_000);
    assert.throws(
      () => readSafetensorsFile(path),
      /header length 200000000 is above the 100000000-byte limit/,
    );
    fs.truncateSync(path, 1000);
    assert.throws(
      () => readSafetensorsFile(path),
      /header length 200000000 runs past the end of the 1000-byte file/,
    );
  });
});

describe("byte order marks (item 10, BOM)", () => {
  it("a UTF-8 BOM at the start of a JSONL, TXT or JSON file is dropped", (t) => {
    const dir = tempDir(t);
    const bom = "\ufeff";
    fs.writeFileSync(join(dir, "train.jsonl"), `${bom}{"text": "a"}\n{"input_ids": [1, 2]}\n`);
    assert.deepEqual(readDataset(join(dir, "train.jsonl")).train, [{ text: "a" }, { input_ids: [1, 2] }]);
    fs.writeFileSync(join(dir, "doc.txt"), `${bom}first\n\nsecond`);
    assert.deepEqual(readDataset(join(dir, "doc.txt")).train, [{ text: "first" }, { text: "second" }]);
    fs.writeFileSync(join(dir, "config.json"), `${bom}{"model_type": "llama"}`);
    assert.deepEqual(readJson(join(dir, "config.json")), { model_type: "llama" });
  });
});
