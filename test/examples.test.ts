/** The examples run as documented. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, it } from "node:test";
import { fixturesDir, repoRoot } from "./helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "lora-examples-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

it("examples/library.ts trains, saves, reloads and merges with equal held-out loss", () => {
  const model = join(fixturesDir, "models/llama_gqa_tied");
  const r = spawnSync(process.execPath, [join(repoRoot, "dist/examples/library.js"), model, "", tmp], {
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
  const [, first] = /step 0: validation loss ([\d.]+)/.exec(r.stdout)!;
  const [, adapter, merged] = /adapter ([\d.]+), merged folder ([\d.]+)/.exec(r.stdout)!;
  assert.ok(Number(adapter) < Number(first), r.stdout);
  assert.ok(Math.abs(Number(adapter) - Number(merged)) <= 1e-4 * Number(adapter), r.stdout);
});

it("npm start's quick start runs the whole story on the embedded model (a short run)", () => {
  const r = spawnSync(
    process.execPath,
    [join(repoRoot, "dist/examples/quickstart.js"), "--steps", "4", "--out", join(tmp, "quickstart")],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /trainable params: 116,736 \|\| all params: 2,674,368 \|\| trainable%: 4\.3650/);
  for (const section of [
    "1. Base model and LoRA",
    "2. Before",
    "3. LoRA training",
    "4. After",
    "5. Save, merge",
  ])
    assert.match(r.stdout, new RegExp(`== ${section}`));
  assert.match(r.stdout, /merged model = base \+ adapter \(within (1e-4|0\.5%)\)/);
  const [, before, after] = /held-out loss +([\d.]+) -> ([\d.]+)/.exec(r.stdout)!;
  assert.ok(Number(after) < Number(before), r.stdout);
});
