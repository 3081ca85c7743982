/** The OpenAI-compatible server's browser-safe parts (the node:http server is in serve/node/). */
export * from "./api.js";
export * from "./engine.js";
export * from "./errors.js";
export * from "./metrics.js";
export * from "./requests.js";
export * from "./scheduler.js";
export * from "./serving.js";
