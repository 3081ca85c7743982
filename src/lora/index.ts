/** LoRA: configuration, the wrapping layer, injection into a model, merging. */

export * from "./adapter-set.js";
export * from "./combine.js";
export * from "./config.js";
export * from "./convert.js";
export * from "./dora.js";
export * from "./init.js";
export * from "./inject.js";
export * from "./layer.js";
export * from "./multi-layer.js";
