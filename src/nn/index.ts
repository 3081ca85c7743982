/** Neural-network building blocks. */

export * from "./base-dtype.js";
export * from "./kv-cache.js";
export * from "./layers.js";
export * from "./module.js";
