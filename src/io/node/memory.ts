/** The memory a load may use: `--max-memory` where given (setMaxMemory), else this machine's (os.totalmem). */
import { totalmem } from "node:os";

let max: number | null = null;

/** Sets (or, with null, clears) the limit every loader checks its estimate against. */
export function setMaxMemory(bytes: number | null): void {
  max = bytes;
}

/** The bytes a model, adapter or dataset may take: --max-memory, else the machine's memory. */
export function memoryAvailable(): number {
  return max ?? totalmem();
}
