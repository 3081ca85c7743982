/** The folder tree's rules: imports point one way down the layers, and the core never imports node:. */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { it } from "node:test";
import { repoRoot } from "./helpers.js";

const LAYERS = [
  "tensor",
  "kernels",
  "autograd",
  "nn",
  "models",
  "lora",
  "io",
  "train",
  "scale-out",
  "plot",
  "experiment",
  "serve",
  "cli",
];
const src = join(repoRoot, "src");

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

/** npm packages that run only in Node (native addons): the browser core must not import them either. */
const NODE_PACKAGES = ["@resvg/resvg-js"];
const layerOf = (file: string) => LAYERS.indexOf(relative(src, file).split("/")[0]!);
const nodeOnly = (file: string) =>
  /^(io\/node|plot\/node|serve\/node|cli|kernels\/(\w+\/)?node)\//.test(relative(src, file)) ||
  relative(src, file) === "node.ts";

it("imports only point to the same or a lower layer; node: stays in io/node and cli", () => {
  const problems: string[] = [];
  for (const file of files(src)) {
    const text = readFileSync(file, "utf8");
    for (const [, spec] of text.matchAll(/from "([^"]+)"/g)) {
      const rel = relative(src, file);
      if (spec!.startsWith("node:") || NODE_PACKAGES.includes(spec!)) {
        if (!nodeOnly(file)) problems.push(`${rel} imports ${spec} (browser core must not)`);
        continue;
      }
      if (!spec!.startsWith(".")) continue;
      const target = resolve(file, "..", spec!.replace(/\.js$/, ".ts"));
      const from = layerOf(file);
      const to = layerOf(target);
      if (from >= 0 && to > from)
        problems.push(`${rel} (${LAYERS[from]}) imports ${relative(src, target)} (${LAYERS[to]})`);
      if (!nodeOnly(file) && nodeOnly(target))
        problems.push(`${rel} imports Node-only ${relative(src, target)}`);
    }
  }
  assert.deepEqual(problems, []);
});

it("the web page (web/src) imports only the browser-safe library, never a Node-only file or node:", () => {
  const web = join(repoRoot, "web/src");
  assert.ok(files(web).length > 0, `no .ts files in ${web}`);
  const problems: string[] = [];
  for (const file of files(web)) {
    for (const [, spec] of readFileSync(file, "utf8").matchAll(/from "([^"]+)"/g)) {
      const rel = relative(repoRoot, file);
      if (spec!.startsWith("node:") || NODE_PACKAGES.includes(spec!)) problems.push(`${rel} imports ${spec}`);
      if (!spec!.startsWith(".")) continue;
      const target = resolve(file, "..", spec!.replace(/\.js$/, ".ts"));
      if (target.startsWith(`${src}/`) && nodeOnly(target))
        problems.push(`${rel} imports Node-only ${relative(repoRoot, target)}`);
    }
  }
  assert.deepEqual(problems, []);
});
