/**
 * The fuzzers' one property, shared by every reader: a case either returns a value or throws an error of
 * our own that names the file and the problem; never a foreign exception from deep code (TypeError,
 * RangeError, ...), never longer than a time limit, never an allocation beyond a small multiple of the
 * input's size. Allocation is measured soundly for what readers allocate by length: while a case runs,
 * the global typed-array, ArrayBuffer and Array constructors are wrapped and every element they are asked
 * for is counted, before the engine allocates it.
 *
 * Seed and size: LORA_FUZZ_SEED (default 19, fixed so `npm test` is repeatable) and LORA_FUZZ_SCALE (the
 * number of cases is multiplied by it; `npm run fuzz` raises it and draws a random seed).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeTextFile } from "../../src/io/json.js";

export const FUZZ_SEED = Number(process.env.LORA_FUZZ_SEED ?? 19);
const SCALE = Number(process.env.LORA_FUZZ_SCALE ?? 1);

/** fast-check parameters for `n` cases at the current scale and seed. */
export const params = (n: number): fc.Parameters<unknown> => ({
  seed: FUZZ_SEED,
  numRuns: Math.max(1, Math.round(n * SCALE)),
  endOnFailure: true,
  includeErrorInReport: true,
});

/** Cases run per reader, for the README's figures (printed by each suite). */
export const casesRun = new Map<string, number>();
export function count(reader: string): void {
  casesRun.set(reader, (casesRun.get(reader) ?? 0) + 1);
}
export function report(reader: string): void {
  console.log(`fuzz ${reader}: ${casesRun.get(reader) ?? 0} cases, seed ${FUZZ_SEED}`);
}

const FOREIGN = new Set([
  "TypeError",
  "RangeError",
  "SyntaxError",
  "ReferenceError",
  "EvalError",
  "URIError",
  "AggregateError",
]);

type Ctor = { BYTES_PER_ELEMENT?: number; new (...args: unknown[]): unknown };
const WRAPPED = [
  "ArrayBuffer",
  "SharedArrayBuffer",
  "Array",
  "Uint8Array",
  "Int8Array",
  "Uint8ClampedArray",
  "Uint16Array",
  "Int16Array",
  "Uint32Array",
  "Int32Array",
  "Float32Array",
  "Float64Array",
  "BigInt64Array",
  "BigUint64Array",
] as const;
const ORIGINAL = new Map(WRAPPED.map((n) => [n, (globalThis as unknown as Record<string, Ctor>)[n]!]));
const OriginalArrayBuffer = ArrayBuffer;

let allocated = 0;
let allowed = Number.POSITIVE_INFINITY;
/** Thrown from inside a case the moment it asks for more than its limit, before the engine allocates. */
class AllocationLimit extends Error {
  override name = "AllocationLimit";
}
const elements = (arg: unknown): number => {
  if (typeof arg === "number") return Number.isFinite(arg) && arg > 0 ? arg : 0;
  if (arg instanceof OriginalArrayBuffer || ArrayBuffer.isView(arg)) return 0; // a view of memory already held
  if (arg !== null && typeof arg === "object" && typeof (arg as ArrayLike<unknown>).length === "number")
    return (arg as ArrayLike<unknown>).length; // a copy
  return 0;
};
const PROXIES = new Map(
  WRAPPED.map((name) => {
    const C = ORIGINAL.get(name)!;
    const size = name === "Array" ? 8 : (C.BYTES_PER_ELEMENT ?? 1);
    const add = (args: unknown[]) => {
      // `Array(a, b)` builds [a, b]; only `Array(n)` asks for n slots
      if (name !== "Array" || (args.length === 1 && typeof args[0] === "number"))
        allocated += elements(args[0]) * size;
      if (allocated > allowed)
        throw new AllocationLimit(`asked for ${allocated} bytes in all, over the ${allowed}-byte limit`);
    };
    const proxy: unknown = new Proxy(C, {
      construct(target, args, newTarget) {
        add(args);
        return Reflect.construct(target, args, newTarget === proxy ? target : newTarget);
      },
      apply(target, self, args) {
        add(args);
        return Reflect.apply(target as unknown as (...a: unknown[]) => unknown, self, args);
      },
    });
    return [name, proxy];
  }),
);

/** Runs `fn` with allocations counted; returns what it allocated (bytes asked for) and its result. */
function counting<T>(fn: () => T, limit: number): { bytes: number; result: T } {
  const g = globalThis as unknown as Record<string, unknown>;
  allocated = 0;
  allowed = limit;
  for (const [name, p] of PROXIES) g[name] = p;
  try {
    const result = fn();
    return { bytes: allocated, result };
  } finally {
    for (const [name, C] of ORIGINAL) g[name] = C;
  }
}

export interface CaseLimits {
  /** The file name the error must name (any one of them, where several files are read). */
  source: string | string[];
  /** The input's size in bytes; the case may allocate `allocFactor` times it plus 1 MiB. */
  inputBytes: number;
  allocFactor?: number;
  /** Per-case wall-clock limit (default 2000 ms: generous for a shared 2-core CI machine). */
  maxMs?: number;
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: Error };

/** Runs one case and asserts the property; returns the value or our error, for further checks. */
export function checkCase<T>(fn: () => T, limits: CaseLimits): Outcome<T> {
  const { inputBytes, allocFactor = 16, maxMs = 2000 } = limits;
  const sources = Array.isArray(limits.source) ? limits.source : [limits.source];
  const limit = allocFactor * inputBytes + 2 ** 20;
  const start = performance.now();
  let outcome: Outcome<T>;
  let bytes = 0;
  try {
    const r = counting(fn, limit);
    bytes = r.bytes;
    outcome = { ok: true, value: r.result };
  } catch (e) {
    bytes = allocated;
    if (!(e instanceof Error)) assert.fail(`threw a non-Error: ${String(e)}`);
    outcome = { ok: false, error: e };
  }
  const ms = performance.now() - start;
  assert.ok(ms <= maxMs, `took ${ms.toFixed(0)} ms, over the ${maxMs} ms limit`);
  assert.ok(bytes <= limit, `allocated ${bytes} bytes for a ${inputBytes}-byte input (limit ${limit})`);
  if (!outcome.ok) {
    const e = outcome.error;
    if (e instanceof AllocationLimit) assert.fail(`${e.message} for a ${inputBytes}-byte input: ${e.stack}`);
    assert.ok(!FOREIGN.has(e.name) && !FOREIGN.has(e.constructor.name), `foreign ${e.name}: ${e.stack}`);
    assert.ok(
      sources.some((s) => e.message.includes(s)),
      `the error does not name ${sources.join(" or ")}: ${e.message}`,
    );
    assert.ok(
      !/\[object Object\]|Cannot read propert|is not a function|is not iterable/.test(e.message),
      e.message,
    );
  }
  return outcome;
}

// ---------- generators: mutations of valid bytes, texts and JSON values ----------

/** Numbers a hostile file writes where a length, count or size belongs. */
export const hostileInt = fc.oneof(
  fc.constantFrom(
    0,
    -1,
    1,
    2 ** 31 - 1,
    2 ** 31,
    2 ** 32 - 1,
    2 ** 32,
    2 ** 53 - 1,
    2 ** 53,
    2 ** 53 + 2,
    2 ** 63,
    2 ** 64 - 1,
    1e12,
    1e308,
    Number.MAX_VALUE,
    -0,
    0.5,
    1e-300,
  ),
  fc.integer(),
  fc.nat(1 << 20),
);

/** A u64 that lies: small, boundary or up to 2^64 − 1. */
export const hostileU64 = fc.oneof(
  fc.constantFrom(0n, 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  fc.bigInt({ min: 0n, max: 1n << 24n }),
);

/** JSON values a hostile config holds: wrong types, huge and fractional numbers, deep nesting. */
export const hostileJson: fc.Arbitrary<unknown> = fc.oneof(
  hostileInt,
  fc.constantFrom(null, true, false, "", "NaN", "Infinity", "1e12", "__proto__", "..", "/etc/passwd"),
  fc.string(),
  fc.array(hostileInt, { maxLength: 4 }),
  fc.dictionary(fc.string({ maxLength: 6 }), hostileInt, { maxKeys: 3 }),
  // (as a value: JSON.stringify, which writes the test's files, recurses; deeper text comes from deepText)
  fc.nat(2_000).map((depth) => deep(depth)),
);

/** An array nested `depth` deep: [[[...]]] (JSON.parse takes it; recursive code over it may not). */
export function deep(depth: number): unknown {
  let v: unknown = [];
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

/** A JSON text nested `depth` deep, built as text (JSON.stringify itself recurses). */
export const deepText = (depth: number) => `${"[".repeat(depth)}${"]".repeat(depth)}`;

/** Byte-level mutations of a valid file: truncation, bit flips, lying u64/u32 fields, splices, garbage. */
export function mutateBytes(base: Uint8Array): fc.Arbitrary<Uint8Array> {
  const n = base.length;
  const pos = fc.nat(Math.max(0, n - 1));
  return fc.oneof(
    fc.nat(n).map((k) => base.slice(0, k)),
    fc.array(fc.tuple(pos, fc.nat(7)), { minLength: 1, maxLength: 16 }).map((flips) => {
      const b = base.slice();
      for (const [i, bit] of flips) b[i]! ^= 1 << bit;
      return b;
    }),
    fc.tuple(fc.nat(Math.max(0, n - 8)), hostileU64).map(([i, v]) => {
      const b = base.slice();
      if (b.length >= i + 8) new DataView(b.buffer).setBigUint64(i, v, true);
      return b;
    }),
    fc.tuple(fc.nat(Math.max(0, n - 4)), fc.nat(0xffffffff)).map(([i, v]) => {
      const b = base.slice();
      if (b.length >= i + 4) new DataView(b.buffer).setUint32(i, v >>> 0, true);
      return b;
    }),
    fc.tuple(pos, fc.nat(64), fc.uint8Array({ maxLength: 64 })).map(([i, del, ins]) => {
      const out = new Uint8Array(n - Math.min(del, n - i) + ins.length);
      out.set(base.subarray(0, i));
      out.set(ins, i);
      out.set(base.subarray(Math.min(n, i + del)), i + ins.length);
      return out;
    }),
    fc.uint8Array({ minLength: 1, maxLength: 256 }).map((tail) => {
      const out = new Uint8Array(n + tail.length);
      out.set(base);
      out.set(tail, n);
      return out;
    }),
  );
}

/** Every path to a value inside `v` (object keys and array indices), the root included. */
function paths(
  v: unknown,
  at: (string | number)[] = [],
  out: (string | number)[][] = [],
): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => paths(x, [...at, i], out));
  else if (v !== null && typeof v === "object")
    for (const [k, x] of Object.entries(v)) paths(x, [...at, k], out);
  return out;
}

function setAt(v: unknown, path: (string | number)[], value: unknown): unknown {
  if (path.length === 0) return value;
  const copy = (Array.isArray(v) ? [...v] : { ...(v as object) }) as Record<string | number, unknown>;
  const [head, ...rest] = path;
  copy[head!] = setAt(copy[head!], rest, value);
  return copy;
}

function deleteAt(v: unknown, path: (string | number)[]): unknown {
  if (path.length === 0) return v;
  if (path.length === 1) {
    const copy = (Array.isArray(v) ? [...v] : { ...(v as object) }) as Record<string | number, unknown>;
    delete copy[path[0]!];
    return copy;
  }
  const [head, ...rest] = path;
  const copy = (Array.isArray(v) ? [...v] : { ...(v as object) }) as Record<string | number, unknown>;
  copy[head!] = deleteAt(copy[head!], rest);
  return copy;
}

/** Structural mutations of a valid JSON value: 1–3 values replaced by hostile ones, or deleted. */
export function mutateJson(
  base: unknown,
  values: fc.Arbitrary<unknown> = hostileJson,
): fc.Arbitrary<unknown> {
  const all = paths(base);
  const one = fc.tuple(fc.constantFrom(...all), fc.boolean(), values);
  return fc.array(one, { minLength: 1, maxLength: 3 }).map((edits) => {
    let v = base;
    for (const [path, del, value] of edits) {
      try {
        v = del && path.length > 0 ? deleteAt(v, path) : setAt(v, path, value);
      } catch {
        // the path no longer exists after an earlier edit: skip it
      }
    }
    return v;
  });
}

/**
 * A JSON file's text from a mutated value, sometimes with text-level damage: a duplicated key, a
 * truncation, invalid UTF-8 bytes, a BOM, or deep nesting spliced in. Returned as bytes.
 */
export function jsonFileBytes(base: unknown, values?: fc.Arbitrary<unknown>): fc.Arbitrary<Uint8Array> {
  const enc = new TextEncoder();
  const text = mutateJson(base, values).map((v) => JSON.stringify(v, null, 1) ?? "null");
  return fc.oneof(
    { weight: 4, arbitrary: text.map((t) => enc.encode(t)) },
    {
      weight: 1,
      arbitrary: fc.tuple(text, fc.nat()).map(([t, k]) => {
        // a duplicate of one key, earlier in the same object: `{"a": 1, ...}` -> `{"a": 1, "a": 1, ...}`
        const keys = [...t.matchAll(/"(?:[^"\\]|\\.)*": [^,\n{[]*,/g)];
        if (keys.length === 0) return enc.encode(t);
        const m = keys[k % keys.length]!;
        return enc.encode(t.slice(0, m.index) + m[0] + t.slice(m.index));
      }),
    },
    { weight: 1, arbitrary: text.chain((t) => mutateBytes(enc.encode(t))) },
    {
      weight: 1,
      arbitrary: fc.tuple(text, fc.nat(), fc.nat(30_000)).map(([t, k, depth]) => {
        const i = t.indexOf(":", k % Math.max(1, t.length));
        if (i < 0) return enc.encode(t);
        const rest = t.slice(i + 1).replace(/^[^,}\]]*/, "");
        return enc.encode(`${t.slice(0, i + 1)}${deepText(depth)}${rest}`);
      }),
    },
  );
}

/** Bytes decoded as a Node reader decodes a text file (io/json.ts decodeTextFile: strict UTF-8, BOM dropped). */
export const asText = decodeTextFile;
