/** Node-only additions: reading and writing model folders, adapters, datasets and files on disk, and the
 *  worker-thread wasm backend (importing this entry makes backend() threaded). */
export * from "./index.js";
export * from "./io/node/adapter-folder.js";
export * from "./io/node/checkpoint-folder.js";
export * from "./io/node/dataset-file.js";
export * from "./io/node/json-file.js";
export * from "./io/node/model-folder.js";
export * from "./io/node/safetensors-file.js";
export * from "./io/node/tokenizer-file.js";
// the threaded wasm backend (registers itself as "wasm"), setThreads/getThreads
export { createThreadedWasm, getThreads, setThreads, threadedWasmBackend } from "./kernels/wasm/node/pool.js";
