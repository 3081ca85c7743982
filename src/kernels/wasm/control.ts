/**
 * The pool's control block in the shared memory, at CONTROL_OFFSET (below the arena):
 * i32 words: [0] pending workers, [1] error flag, [2] workers ready, [16 + t] generation of thread t;
 * then from byte ARGS, one slot of SLOT f64 per thread: [kernel index, argc, args...].
 */
export const PENDING = 0;
export const ERROR = 1;
export const READY = 2;
export const GEN = 16;
export const MAX_THREADS = 64;
export const ARGS = 4 * (GEN + MAX_THREADS);
export const SLOT = 32;
export const CONTROL_BYTES = ARGS + 8 * SLOT * MAX_THREADS;
