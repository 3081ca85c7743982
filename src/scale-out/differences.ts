/**
 * The settings of a run that the engine cannot express identically: each one named, with what differs,
 * so that `lora scale-out` prints them and the generated README lists them (nothing is dropped
 * silently). Pure.
 */
import type { Settings } from "../train/settings.js";
import type { DataFormat, EngineOptions } from "./mapping.js";

export interface Difference {
  /** The setting (flag name) or topic. */
  setting: string;
  what: string;
}

/** What differs between this run under `lora train` and under the engine, given the data's format. */
export function differences(
  s: Settings,
  o: EngineOptions,
  format: DataFormat,
  rows: number,
  hasValid = false,
): Difference[] {
  const out: Difference[] = [];
  const add = (setting: string, what: string) => out.push({ setting, what });
  if (!s["no-shuffle"])
    add(
      "no-shuffle",
      "the data order: the Trainer's RandomSampler draws its permutation from torch's generator seeded with --seed, not lora-ts's Rng, so rows are visited in another order (--no-shuffle gives the same order)",
    );
  const init = s.init as string;
  if (!s.adapter && (init === "kaiming" || init === "gaussian"))
    add(
      "init",
      `A's initial values: PEFT draws ${init === "gaussian" ? "N(0, 1/r)" : "kaiming-uniform"} from torch's RNG, the same distribution but other numbers than lora-ts (start both from one --adapter for the same start)`,
    );
  if (!s.adapter && init.startsWith("pissa_niter_"))
    add(
      "init",
      `${init}: PEFT's randomized SVD draws its test matrix from torch's RNG, so A, B and the residual base differ from lora-ts's, and so does the residual each later load recomputes (use --init pissa for an exact start)`,
    );
  const targets = (s.targets as string | null) ?? "";
  if (!s["save-embedding-layers"] && /embed_tokens|wte/.test(targets))
    add(
      "save-embedding-layers",
      "PEFT's save_embedding_layers 'auto' writes the whole table of each adapted embedding into the adapter; lora train writes it only with --save-embedding-layers",
    );
  if ((s.dropout as number) > 0)
    add("dropout", "the dropout masks come from torch's RNG, not lora-ts's: the same rate, other masks");
  if (format === "prompt-completion")
    add(
      "data",
      "prompt/completion rows: TRL tokenizes prompt + completion as one string (lora-ts tokenizes the completion on its own), and an over-long row loses the end of its completion (truncation_mode keep_start), where lora-ts cuts the start of its prompt",
    );
  if (format === "messages" && s["mask-prompt"])
    add(
      "mask-prompt",
      "assistant_only_loss needs a chat template with {% generation %} markers (TRL's training templates have them); lora-ts finds assistant turns by rendering prefixes, so another template can mask differently or fail in TRL",
    );
  if (s.pack)
    add(
      "pack",
      "TRL's wrapped packing cuts after its own tokenization into max_length blocks; the blocks are lora-ts's only when both tokenize alike, and TRL drops nothing of the last block",
    );
  const dtype = s["base-dtype"] as string;
  if (dtype === "auto")
    add(
      "base-dtype",
      "auto loads the base in float32 (lora-ts picks bf16 where its backend multiplies bf16 faster)",
    );
  if (dtype === "bf16" || dtype === "f16")
    add(
      "base-dtype",
      `torch runs the whole base model in ${dtype === "bf16" ? "bfloat16" : "float16"} (activations too); lora-ts keeps activations in f32 and only rounds the frozen weights`,
    );
  if (o.mixedPrecision !== "no")
    add(
      "mixed-precision",
      `${o.mixedPrecision} autocast has no counterpart in lora train, which computes in f32: losses differ at ${o.mixedPrecision}'s precision`,
    );
  const global = s["batch-size"] as number;
  if (o.numProcesses > 1 && rows % global !== 0)
    add(
      "batch-size",
      `${rows} rows do not fill whole batches of ${global}: with ${o.numProcesses} processes accelerate evens out the last batch of an epoch with rows from the start of the data (even_batches), where lora-ts runs a shorter batch`,
    );
  if (o.numProcesses > 1)
    add(
      "num-processes",
      "DDP sums each process's gradient of its tokens over the global token count (average_tokens_across_devices) then all-reduces: the same gradient as one process up to float summation order",
    );
  if (hasValid)
    add(
      "val-data",
      "TRL's eval_loss is the mean of each evaluation batch's mean token loss, weighted by rows, where lora-ts's is the mean over all validation tokens; under DDP it came out lower still (see the lora-ts README): run lora eval on the adapter for lora-ts's number",
    );
  if (s["save-every"] !== null)
    add(
      "save-every",
      "checkpoints are Hugging Face Trainer checkpoints in OUT/checkpoints (resume with trainer.train(resume_from_checkpoint=True)); lora train --resume does not read them",
    );
  return out;
}
