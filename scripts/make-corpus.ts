/**
 * Writes test/corpus/: hostile files, each a case the fuzzers or a user found, and manifest.json, which
 * says for each the `lora` command line that reads it and a fragment of the error it must give.
 * Run: npx tsc -p . && node dist/scripts/make-corpus.js (from the repository root). The files are
 * committed; tests never run this.
 */
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const root = join(process.cwd(), "test/corpus");
const fixture = join(process.cwd(), "test/fixtures/models/llama_gqa_tied");
const CONFIG = JSON.parse(readFileSync(join(fixture, "config.json"), "utf8")) as Record<string, unknown>;
const WEIGHTS = new Uint8Array(readFileSync(join(fixture, "model.safetensors")));
const GGUF = new Uint8Array(
  readFileSync(join(process.cwd(), "test/fixtures/gguf/models/llama_gqa_tied.f16.gguf")),
);
const ADAPTER = join(fixture, "adapter");
const ADAPTER_CONFIG = JSON.parse(readFileSync(join(ADAPTER, "adapter_config.json"), "utf8")) as Record<
  string,
  unknown
>;

interface Case {
  /** The case's file or folder, under test/corpus. */
  file: string;
  /** What is wrong with it, and who found it. */
  why: string;
  /** `lora` arguments; {case} is the file, {fixtures} test/fixtures, {corpus} test/corpus, {out} a fresh path. */
  args: string[];
  /** A fragment of the one message it must print. */
  expect: string;
}
const cases: Case[] = [];

rmSync(root, { recursive: true, force: true });
mkdirSync(root, { recursive: true });
const put = (path: string, data: Uint8Array | string) => {
  mkdirSync(join(root, path, ".."), { recursive: true });
  writeFileSync(join(root, path), data);
};
const okData = "ok/ids.jsonl";
put(okData, `${JSON.stringify({ input_ids: [1, 5, 9, 2] })}\n`);
const evalModel = ["eval", "--model", "{case}", "--data", `{corpus}/${okData}`];

/** The fixture's safetensors header as an object, and its data section. */
const headerLen = Number(new DataView(WEIGHTS.buffer).getBigUint64(0, true));
const HEADER = JSON.parse(new TextDecoder().decode(WEIGHTS.subarray(8, 8 + headerLen))) as Record<
  string,
  unknown
>;
const DATA = WEIGHTS.subarray(8 + headerLen);
const withHeader = (text: string, data = DATA) => {
  const json = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
};
const entry = (name: string) =>
  HEADER[name] as { dtype: string; shape: number[]; data_offsets: [number, number] };
const edited = (edit: (h: Record<string, unknown>) => void) => {
  const h = structuredClone(HEADER);
  edit(h);
  return withHeader(JSON.stringify(h));
};

function model(name: string, why: string, expect: string, weights: Uint8Array, config: unknown = CONFIG) {
  const text =
    typeof config === "string" || config instanceof Uint8Array ? config : JSON.stringify(config, null, 2);
  put(`${name}/config.json`, text);
  put(`${name}/model.safetensors`, weights);
  cases.push({ file: name, why, args: evalModel, expect });
}

// ---------- safetensors ----------
model(
  "st-truncated",
  "weights cut off halfway (an interrupted download)",
  "truncated",
  WEIGHTS.slice(0, WEIGHTS.length >> 1),
);
{
  const b = WEIGHTS.slice();
  new DataView(b.buffer).setBigUint64(0, 2n ** 64n - 1n, true);
  model("st-header-length-2pow64", "header length 2^64 − 1", "runs past the end", b);
}
model(
  "st-overlap",
  "two tensors share bytes",
  "overlap",
  edited((h) => {
    (h["model.layers.0.self_attn.o_proj.weight"] as { data_offsets: number[] }).data_offsets = [
      ...entry("model.layers.0.self_attn.q_proj.weight").data_offsets,
    ];
  }),
);
model(
  "st-reversed-offsets",
  "end offset before begin",
  "outside the",
  edited((h) => {
    const e = h["model.norm.weight"] as { data_offsets: number[] };
    e.data_offsets = [e.data_offsets[1]!, e.data_offsets[0]!];
  }),
);
model(
  "st-unknown-dtype",
  "a dtype no reader knows",
  "unknown dtype",
  edited((h) => {
    (h["model.norm.weight"] as { dtype: string }).dtype = "F8_E9M9";
  }),
);
model(
  "st-shape-past-2pow53",
  "a shape whose element count passes 2^53",
  "needs",
  edited((h) => {
    (h["model.norm.weight"] as { shape: number[] }).shape = [2 ** 30, 2 ** 30, 2 ** 30];
  }),
);
{
  const text = JSON.stringify(HEADER);
  const first = text.indexOf('"model.norm.weight"');
  const end = text.indexOf("}", first) + 1;
  model(
    "st-duplicate-key",
    "a tensor listed twice (JSON.parse would keep the last)",
    "more than once",
    withHeader(`${text.slice(0, end)},${text.slice(first, end)}${text.slice(end)}`),
  );
  model(
    "st-deep-nesting",
    "a header nested 100,000 deep (found by fuzzing: a message's JSON.stringify overflowed the stack)",
    "nests",
    withHeader(`{"x":${"[".repeat(100_000)}${"]".repeat(100_000)},${text.slice(1)}`),
  );
  const bad = withHeader(text); // the header is ASCII: a character's index is its byte's
  bad[8 + text.indexOf("model.norm") + 2] = 0xff;
  model("st-invalid-utf8", "a byte that is not UTF-8 in a tensor name", "UTF-8", bad);
}
{
  const b = WEIGHTS.slice();
  const { data_offsets } = entry("model.norm.weight");
  new DataView(b.buffer).setFloat32(8 + headerLen + data_offsets[0], Number.NaN, true);
  model("st-nan-weight", "a weight holding NaN", "not finite", b);
}

// ---------- config.json ----------
model("config-vocab-1e12", "a 10^12-entry vocabulary", "vocab_size", WEIGHTS, {
  ...CONFIG,
  vocab_size: 1e12,
});
model(
  "config-290M-layers",
  "290,718,726 layers (found by fuzzing: building the layer list exhausted the heap)",
  "need at least",
  WEIGHTS,
  { ...CONFIG, num_hidden_layers: 290_718_726 },
);
model(
  "config-deep-nesting",
  "config.json nested 10,000 deep",
  "nests",
  WEIGHTS,
  `{"rope_scaling": ${"[".repeat(10_000)}${"]".repeat(10_000)}, "model_type": "llama"}`,
);
{
  const bytes = new TextEncoder().encode(JSON.stringify(CONFIG));
  bytes[bytes.indexOf(0x6c)] = 0xc0; // an overlong-encoding lead byte, in place of an "l"
  model("config-not-utf8", "config.json with a byte that is not UTF-8", "not UTF-8", WEIGHTS, bytes);
}

// ---------- pickles and paths ----------
const PICKLE = new Uint8Array([0x80, 0x02, 0x63, 0x6f, 0x73, 0x0a, 0x73, 0x79, 0x73, 0x74, 0x65, 0x6d, 0x0a]); // "cos\nsystem"
put("pickle-model/config.json", JSON.stringify(CONFIG));
put("pickle-model/pytorch_model.bin", PICKLE);
cases.push({
  file: "pickle-model",
  why: "only a pickle checkpoint (it could run code)",
  args: evalModel,
  expect: "safe_serialization=True",
});

function shards(name: string, why: string, weightMap: Record<string, string>) {
  put(`${name}/config.json`, JSON.stringify(CONFIG));
  put(`${name}/model.safetensors.index.json`, JSON.stringify({ metadata: {}, weight_map: weightMap }));
  cases.push({ file: name, why, args: evalModel, expect: "is not a file name in this folder" });
}
shards("shard-dotdot", "a shard index naming ../", {
  "model.norm.weight": "../st-nan-weight/model.safetensors",
});
shards("shard-absolute", "a shard index naming an absolute path", { "model.norm.weight": "/etc/passwd" });
shards("shard-symlink", "a shard that is a symbolic link out of the folder", {
  "model.norm.weight": "link.safetensors",
});
symlinkSync("../st-nan-weight/model.safetensors", join(root, "shard-symlink/link.safetensors"));

// ---------- adapters (merged: nothing may be left at --out) ----------
const merge = [
  "merge",
  "--model",
  "{fixtures}/models/llama_gqa_tied",
  "--adapter",
  "{case}",
  "--out",
  "{out}",
];
function adapter(name: string, why: string, expect: string, config: unknown, weights?: Uint8Array) {
  put(`${name}/adapter_config.json`, JSON.stringify(config, null, 2));
  put(
    `${name}/adapter_model.safetensors`,
    weights ?? new Uint8Array(readFileSync(join(ADAPTER, "adapter_model.safetensors"))),
  );
  cases.push({ file: name, why, args: merge, expect });
}
adapter(
  "adapter-bad-regex",
  "target_modules a broken regex (found by fuzzing: failed deep in injection)",
  "not a valid regular expression",
  { ...ADAPTER_CONFIG, target_modules: "(*q" },
);
adapter(
  "adapter-rank-pattern-regex",
  "a rank_pattern key that is a broken regex (found by fuzzing)",
  "not a valid regular expression",
  { ...ADAPTER_CONFIG, rank_pattern: { "*Q": 2 } },
);
adapter(
  "adapter-layers-string",
  "layers_to_transform a string (found by fuzzing: 'layers.join is not a function')",
  "layers_to_transform",
  { ...ADAPTER_CONFIG, layers_to_transform: "all" },
);
adapter(
  "adapter-truncated",
  "adapter weights cut off",
  "truncated",
  ADAPTER_CONFIG,
  new Uint8Array(readFileSync(join(ADAPTER, "adapter_model.safetensors"))).slice(0, 500),
);
put("adapter-pickle/adapter_config.json", JSON.stringify(ADAPTER_CONFIG));
put("adapter-pickle/adapter_model.bin", PICKLE);
cases.push({
  file: "adapter-pickle",
  why: "only a pickled adapter",
  args: merge,
  expect: "safe_serialization=True",
});

// ---------- datasets ----------
const evalData = ["eval", "--model", "{fixtures}/models/llama_gqa_tied", "--data", "{case}"];
const data = (name: string, why: string, expect: string, text: string | Uint8Array) => {
  put(name, text);
  cases.push({ file: name, why, args: evalData, expect });
};
data(
  "data/bad-json.jsonl",
  "a line that is not JSON",
  "invalid JSON",
  '{"input_ids": [1, 2]}\n{"input_ids": [1, 2\n',
);
data(
  "data/not-utf8.jsonl",
  "a byte that is not UTF-8 (it used to become U+FFFD silently)",
  "not UTF-8",
  new Uint8Array([...new TextEncoder().encode('{"text": "a'), 0xff, ...new TextEncoder().encode('"}\n')]),
);
data(
  "data/id-2pow31.jsonl",
  "a token id that wraps to negative in an Int32Array",
  "above the largest token id",
  '{"input_ids": [1, 2147483648]}\n',
);
data(
  "data/deep.jsonl",
  "a row nested 10,000 deep",
  "must be a string",
  `{"text": ${"[".repeat(10_000)}${"]".repeat(10_000)}}\n`,
);
data("data/empty.jsonl", "no rows", "no rows found", "\n\n");
data(
  "data/messages.jsonl",
  "messages that are not role/content pairs",
  '"messages" must be',
  '{"messages": [{"role": "user"}]}\n',
);

// ---------- GGUF ----------
const gguf = (name: string, why: string, expect: string, bytes: Uint8Array) => {
  put(name, bytes);
  cases.push({ file: name, why, args: evalModel, expect });
};
gguf("gguf/truncated.gguf", "a GGUF model cut off", "truncated", GGUF.slice(0, GGUF.length >> 1));
{
  const b = GGUF.slice();
  new DataView(b.buffer).setBigUint64(8, 2n ** 64n - 1n, true);
  gguf("gguf/tensor-count-2pow64.gguf", "a tensor count of 2^64 − 1", "left in the file", b);
  const c = GGUF.slice();
  new DataView(c.buffer).setBigUint64(24, 2n ** 64n - 1n, true);
  gguf("gguf/key-length-2pow64.gguf", "a metadata key 2^64 − 1 bytes long", "bytes left in the file", c);
}

// ---------- tokenizer ----------
{
  const tok = JSON.parse(
    readFileSync(join(process.cwd(), "test/fixtures/tokenizers/tiny-chat/tokenizer.json"), "utf8"),
  );
  const vocab = tok.model.vocab as Record<string, number>;
  vocab[Object.keys(vocab)[10]!] = 161_006_610;
  put("tokenizer-stray-id/config.json", JSON.stringify(CONFIG));
  put("tokenizer-stray-id/model.safetensors", WEIGHTS);
  put("tokenizer-stray-id/tokenizer.json", JSON.stringify(tok));
  cases.push({
    file: "tokenizer-stray-id",
    why: "a vocabulary id of 161,006,610 in a 70-entry vocabulary (found by fuzzing: took 40 s to build)",
    args: ["generate", "--model", "{case}", "--prompt", "hi", "--max-tokens", "1"],
    expect: "not an integer from 0 to",
  });
}

{
  const tok = JSON.parse(
    readFileSync(join(process.cwd(), "test/fixtures/tokenizers/tiny-chat/tokenizer.json"), "utf8"),
  );
  tok.post_processor = { type: "TemplateProcessing", single: 7, pair: 7, special_tokens: {} };
  put("tokenizer-bad-post-processor/config.json", JSON.stringify(CONFIG));
  put("tokenizer-bad-post-processor/model.safetensors", WEIGHTS);
  put("tokenizer-bad-post-processor/tokenizer.json", JSON.stringify(tok));
  cases.push({
    file: "tokenizer-bad-post-processor",
    why: "a post_processor that is not a template (found by fuzzing: a TypeError at the first encode)",
    args: ["generate", "--model", "{case}", "--prompt", "hi", "--max-tokens", "1"],
    expect: "malformed entry",
  });
}

// ---------- memory and flags ----------
cases.push({
  file: okData,
  why: "--max-memory below what the model needs",
  args: ["eval", "--model", "{fixtures}/models/llama_gqa_tied", "--data", "{case}", "--max-memory", "16K"],
  expect: "more than this machine's",
});
cases.push({
  file: okData,
  why: "--max-memory that is not a size",
  args: ["eval", "--model", "{fixtures}/models/llama_gqa_tied", "--data", "{case}", "--max-memory", "lots"],
  expect: "--max-memory must be a size",
});
cases.push({
  file: okData,
  why: "a number past the float range",
  args: [
    "train",
    "--model",
    "{fixtures}/models/llama_gqa_tied",
    "--data",
    "{case}",
    "--out",
    "{out}",
    "--steps",
    "1e400",
  ],
  expect: "--steps must be an integer",
});

writeFileSync(join(root, "manifest.json"), `${JSON.stringify({ cases }, null, 2)}\n`);
console.log(`wrote ${cases.length} cases to ${root}`);
