/**
 * Fuzzing the chat-template inputs (tokenizer.ts applyChatTemplate over @huggingface/jinja): templates
 * from tokenizer_config.json, damaged by inserting and deleting Jinja fragments, rendering messages of
 * any text (lone surrogates included) and template variables of any JSON. Each case renders a string
 * or throws our error naming the folder and the chat template; a template never reaches the host
 * (process, require, globalThis), and the Jinja sandbox is the only place a template runs.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { type ChatMessage, Tokenizer } from "../../src/io/tokenizer.js";
import { fixturesDir } from "../helpers.js";
import { checkCase, count, hostileJson, params, report } from "./harness.js";

const DIR = join(fixturesDir, "tokenizers/tiny-chat");
const json = (f: string) => JSON.parse(readFileSync(join(DIR, f), "utf8")) as Record<string, unknown>;
const TOKENIZER_JSON = json("tokenizer.json");
const CONFIG = json("tokenizer_config.json");
const TEMPLATE = (CONFIG.chat_template as Array<{ name: string; template: string }>)[0]!.template;
const tokenizer = (chat_template: unknown) =>
  Tokenizer.fromJSON({ tokenizerJson: TOKENIZER_JSON, tokenizerConfig: { ...CONFIG, chat_template } }, DIR);

const FRAGMENTS = [
  "{{",
  "}}",
  "{%",
  "%}",
  "{#",
  "#}",
  "{% for m in messages %}",
  "{% endfor %}",
  "{% if x %}",
  "{% endif %}",
  "{{ messages[0]['content'] }}",
  "{{ messages[99].role }}",
  "{{ raise_exception('refused') }}",
  "{{ x.y.z }}",
  "{{ 1 / 0 }}",
  "{{ 'a' ~ 1 }}",
  "{{ messages | length }}",
  "{{ bos_token * 3 }}",
  "{% set n = namespace(a=1) %}",
  "{{ messages | tojson }}",
  "{{ range(5) | list }}",
  "{{ messages[0].content.split('a') }}",
  "{% macro f() %}{% endmacro %}",
  "{{ ''.constructor }}",
  "{{ messages.constructor.constructor('return process')() }}",
  "{{ cycler.__init__ }}",
  "{{ process }}",
  "{{ require }}",
  "{{ globalThis }}",
  "{{ self }}",
  "{{ strftime_now('%Y') }}",
  "\u0000",
  "\ud800",
];
const damagedTemplate = fc
  .array(fc.tuple(fc.nat(), fc.nat(8), fc.constantFrom(...FRAGMENTS)), { minLength: 1, maxLength: 4 })
  .map((edits) => {
    let t = TEMPLATE;
    for (const [at, del, frag] of edits) {
      const i = at % (t.length + 1);
      t = t.slice(0, i) + frag + t.slice(i + del);
    }
    return t;
  });
const message = fc.record({
  role: fc.oneof(fc.constantFrom("user", "assistant", "system"), fc.string()),
  content: fc.string({ unit: "binary" }),
});

describe("fuzz: chat templates", () => {
  it("damaged templates over any messages: a string, or an error naming the folder's chat template", () => {
    fc.assert(
      fc.property(
        fc.oneof(damagedTemplate, hostileJson),
        fc.array(message, { maxLength: 4 }),
        fc.dictionary(fc.string({ maxLength: 8 }), hostileJson, { maxKeys: 2 }),
        fc.boolean(),
        (template, messages: ChatMessage[], vars, addGenerationPrompt) => {
          count("chat template");
          const limits = { source: DIR, inputBytes: 4096, allocFactor: 64 };
          const tok = checkCase(() => tokenizer(template), limits);
          if (!tok.ok || tok.value.chatTemplate === null) return;
          const r = checkCase(
            () => tok.value.applyChatTemplate(messages, { addGenerationPrompt, vars }),
            limits,
          );
          if (r.ok) assert.equal(typeof r.value, "string");
          if (!r.ok) assert.match(r.error.message, /chat_template/);
        },
      ),
      params(1000),
    );
    report("chat template");
  });
});
