/** Node-only additions: reading and writing model folders, adapters, datasets and files on disk, and the
 *  native and worker-thread wasm backends (importing this entry makes backend() native or threaded). */
export * from "./index.js";
export * from "./io/node/adapter-folder.js";
export * from "./io/node/checkpoint-folder.js";
export * from "./io/node/dataset-file.js";
export * from "./io/node/gguf-adapter-file.js";
export * from "./io/node/json-file.js";
export * from "./io/node/model-folder.js";
export * from "./io/node/safetensors-file.js";
export * from "./io/node/tokenizer-file.js";
// the native backend (when its addon is built) and the threaded wasm one; one thread count for both
export { getThreads, nativeIsa, nativeIsaInfo, nativeStatus, setThreads } from "./kernels/node/index.js";
export { createThreadedWasm, threadedWasmBackend } from "./kernels/wasm/node/pool.js";
export * from "./serve/node/adapter-dir.js";
export * from "./serve/node/http-server.js";
