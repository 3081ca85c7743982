/**
 * The Python that runs the generated train.py in tests: LORA_SCALEOUT_PYTHON (a venv's python with
 * torch, transformers, peft, trl, accelerate and datasets, e.g. /work/venv/bin/python). Unset, or
 * without those packages, the tests that need it skip, saying why. CI has no such venv.
 */
import { spawnSync } from "node:child_process";

export const PYTHON = process.env.LORA_SCALEOUT_PYTHON ?? null;

function check(): string | null {
  if (!PYTHON)
    return "skipped: set LORA_SCALEOUT_PYTHON to a python with torch, transformers, peft, trl, accelerate and datasets (e.g. /work/venv/bin/python)";
  const r = spawnSync(PYTHON, ["-c", "import torch, transformers, peft, trl, accelerate, datasets"], {
    encoding: "utf8",
  });
  if (r.status !== 0)
    return `skipped: LORA_SCALEOUT_PYTHON=${PYTHON} cannot import the engine: ${(r.stderr || String(r.error)).trim().split("\n").at(-1)}`;
  return null;
}

/** Why the Python tests skip here, or false when they run. */
export const PYTHON_MISSING: string | false = check() ?? false;

/** Runs `python args` in `cwd`; exit code and output (the tests show it on failure). */
export function python(cwd: string, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(PYTHON!, args, {
    cwd,
    encoding: "utf8",
    env: { ...process.env, ...env },
    maxBuffer: 64 * 1024 * 1024,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** `accelerate launch --config_file accelerate_config.yaml train.py`, from inside the folder, as its README says. */
export const launch = (dir: string) =>
  python(dir, ["-m", "accelerate.commands.launch", "--config_file", "accelerate_config.yaml", "train.py"], {
    OMP_NUM_THREADS: "1",
  });
