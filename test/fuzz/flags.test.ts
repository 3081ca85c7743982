/**
 * Fuzzing the CLI's numeric flags (train/settings.ts checkedNumber, which every `lora` command's
 * numbers go through, and settingsFrom, the fine-tuning settings table): any string gives a number
 * inside the flag's bounds or a SettingsError naming the flag; an accepted number reads back the same.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { checkedNumber, SETTINGS, type Spec, settingsFrom } from "../../src/train/settings.js";
import { checkCase, count, params, report } from "./harness.js";

const NUMERIC = Object.entries(SETTINGS as Record<string, Spec>).filter(
  ([, s]) => s.kind === "int" || s.kind === "number",
);

const raw = fc.oneof(
  fc.string(),
  fc.double().map(String),
  fc.integer().map(String),
  fc.constantFrom(
    "",
    " ",
    "1e309",
    "-1e309",
    "NaN",
    "Infinity",
    "-Infinity",
    "0x10",
    "1_000",
    "1e3",
    "9007199254740993",
    "-0",
    "1.",
    ".5",
    "5 ",
    "\u00a05",
    "١٢",
    "0b11",
    "1e-400",
  ),
);

describe("fuzz: numeric flags", () => {
  it("checkedNumber: a number within bounds (an integer where asked) or a SettingsError naming the flag", () => {
    fc.assert(
      fc.property(fc.constantFrom(...NUMERIC), raw, ([name, spec], value) => {
        count("numeric flags");
        const bounds = { ...spec, int: spec.kind === "int" };
        const r = checkCase(() => checkedNumber(name, value, bounds), {
          source: `--${name}`,
          inputBytes: value.length,
        });
        if (!r.ok) {
          assert.equal(r.error.name, "SettingsError");
          assert.equal(r.error.message.split("\n").length, 1, "one line");
          return;
        }
        const n = r.value;
        assert.ok(Number.isFinite(n));
        if (bounds.int) assert.ok(Number.isSafeInteger(n));
        if (spec.min !== undefined) assert.ok(spec.exclusiveMin ? n > spec.min : n >= spec.min);
        if (spec.max !== undefined) assert.ok(n <= spec.max);
        assert.equal(checkedNumber(name, String(n), bounds), n, "the value reads back the same");
      }),
      params(3000),
    );
  });

  it("settingsFrom: a whole settings table of hostile strings gives settings or one SettingsError", () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.constantFrom(...NUMERIC.map(([n]) => n)), raw, { maxKeys: 4 }),
        (values) => {
          count("numeric flags");
          const r = checkCase(() => settingsFrom(values), { source: "--", inputBytes: 1024 });
          if (!r.ok) assert.equal(r.error.name, "SettingsError");
        },
      ),
      params(1000),
    );
    report("numeric flags");
  });
});
