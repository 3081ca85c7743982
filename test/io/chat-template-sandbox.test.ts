/**
 * Chat templates come from downloaded files and run only inside @huggingface/jinja, an interpreter that
 * sees nothing but the values passed to it: the classic escapes from Python's Jinja (reaching a
 * constructor, globals, os) and JavaScript's (Function from a constructor, process, require) must
 * neither run host code nor show host objects.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { Tokenizer } from "../../src/io/tokenizer.js";
import { fixturesDir } from "../helpers.js";

const dir = join(fixturesDir, "tokenizers/tiny-chat");
const tokenizerJson = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
const render = (chat_template: string) =>
  Tokenizer.fromJSON({ tokenizerJson, tokenizerConfig: { chat_template } }, dir).applyChatTemplate([
    { role: "user", content: "hi" },
  ]);

const ESCAPES = [
  "{{ messages.constructor.constructor('globalThis.__pwned = 1; return process')() }}",
  "{{ ''.constructor.constructor('globalThis.__pwned = 1')() }}",
  "{{ messages[0].constructor.constructor('globalThis.__pwned = 1')() }}",
  "{{ messages.__proto__ }}{{ messages.__class__.__mro__ }}",
  "{{ cycler.__init__.__globals__.os.popen('touch /tmp/pwned').read() }}",
  "{{ self.__init__.__globals__ }}",
  "{{ process }}{{ process.env }}{{ require('fs') }}",
  "{{ globalThis }}{{ global }}{{ this }}{{ window }}",
  "{{ messages.map }}{{ 'a'.toString }}{{ messages.push('x') }}",
  "{% set f = messages.constructor %}{{ f('return process')() }}",
];

it("a chat template reaches no JavaScript function, constructor or global of the host", () => {
  const g = globalThis as { __pwned?: unknown };
  for (const t of ESCAPES) {
    let out = "";
    try {
      out = render(t);
    } catch (e) {
      // refused: our error, naming the folder and the template
      assert.equal((e as Error).name, "InputError", `${t}: ${(e as Error).stack}`);
      assert.match((e as Error).message, /chat_template/);
    }
    assert.equal(g.__pwned, undefined, `${t} ran host code`);
    // nothing of the host shows: no function source, no process object, no environment
    assert.doesNotMatch(out, /function|native code|\[object process\]|PATH=|env/, `${t} rendered ${out}`);
  }
});

it("the sandbox still renders what chat templates do: loops, filters, namespaces, raise_exception", () => {
  assert.equal(render("{% for m in messages %}{{ m.role | upper }}:{{ m.content }}{% endfor %}"), "USER:hi");
  assert.equal(
    render(
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
    ),
    "1",
  );
  assert.throws(() => render("{{ raise_exception('no system role') }}"), /chat_template.*no system role/);
});
