/**
 * Loads a model folder with its weights kept in their own 16-bit dtype (--base-dtype bf16) and prints
 * the process's peak RSS against the weight file's size: the cost of loading, without a second copy.
 *
 *   node dist/scripts/real-size/load-peak.js MODEL_DIR
 */
import { statSync } from "node:fs";
import { join } from "node:path";
import { loadModelFolder } from "../../src/io/node/model-folder.js";

const dir = process.argv[2];
if (!dir) throw new Error("usage: load-peak.js MODEL_DIR");
const before = process.resourceUsage().maxRSS / 1024;
const t0 = performance.now();
const { model } = loadModelFolder(dir, { baseDtype: "bf16" });
const seconds = (performance.now() - t0) / 1000;
const peak = process.resourceUsage().maxRSS / 1024;
const file = statSync(join(dir, "model.safetensors")).size / 2 ** 20;
const params = model.parameters().reduce((s, p) => s + p.size, 0);
console.log(
  JSON.stringify({
    params,
    file_mib: Math.round(file),
    peak_rss_mib: Math.round(peak),
    rss_before_mib: Math.round(before),
    peak_over_file: +(peak / file).toFixed(3),
    load_s: +seconds.toFixed(1),
  }),
);
