/**
 * A file from outside that cannot be used: names the file and says what is wrong with it and what to
 * do. Readers throw it (or SafetensorsError / GGUFError, which say the same in their formats' terms);
 * the CLI prints its message as one line, without a stack trace unless --debug.
 */
export class InputError extends Error {
  override name = "InputError";
  constructor(
    readonly file: string,
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`${file}: ${problem}`, options);
  }
}
