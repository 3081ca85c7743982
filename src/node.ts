/** Node-only additions: reading and writing model folders, adapters, datasets and files on disk. */
export * from "./index.js";
export * from "./io/node/adapter-folder.js";
export * from "./io/node/checkpoint-folder.js";
export * from "./io/node/dataset-file.js";
export * from "./io/node/json-file.js";
export * from "./io/node/model-folder.js";
export * from "./io/node/safetensors-file.js";
export * from "./io/node/tokenizer-file.js";
