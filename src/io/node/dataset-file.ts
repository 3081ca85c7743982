/** Node: reads a dataset from a .txt/.jsonl file (train only) or a folder of train/valid/test.jsonl. */
import { existsSync, readdirSync, statSync } from "node:fs";
import { extname, join } from "node:path";
import { type DataRow, parseDataset } from "../dataset.js";
import { checkMemory } from "../memory.js";
import { memoryAvailable } from "./memory.js";
import { readTextFile } from "./read-file.js";

export type DatasetSplits = { train: DataRow[]; valid?: DataRow[]; test?: DataRow[] };

function readFile(path: string): DataRow[] {
  const ext = extname(path).toLowerCase();
  if (ext !== ".txt" && ext !== ".jsonl") {
    throw new Error(
      `${path}: unsupported dataset file type "${ext}"; use a .txt or .jsonl file, or a folder holding train.jsonl`,
    );
  }
  // its text alone takes two bytes a character once read (rows and token ids come on top)
  checkMemory(
    2 * statSync(path).size,
    memoryAvailable(),
    path,
    "its text and rows",
    "split it into smaller files, or raise --max-memory",
  );
  return parseDataset(readTextFile(path), path, ext === ".txt" ? "txt" : "jsonl");
}

export function readDataset(path: string): DatasetSplits {
  if (!existsSync(path)) throw new Error(`dataset not found: ${path} does not exist`);
  if (!statSync(path).isDirectory()) return { train: readFile(path) };
  const files = readdirSync(path).sort();
  if (!files.includes("train.jsonl")) {
    const holds = files.length > 0 ? `it holds: ${files.join(", ")}` : "it is empty";
    throw new Error(
      `${path}: a dataset folder must hold train.jsonl (and may hold valid.jsonl, test.jsonl); ${holds}`,
    );
  }
  const splits: DatasetSplits = { train: readFile(join(path, "train.jsonl")) };
  for (const name of ["valid", "test"] as const) {
    if (files.includes(`${name}.jsonl`)) splits[name] = readFile(join(path, `${name}.jsonl`));
  }
  return splits;
}
