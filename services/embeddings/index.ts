export * from "./embedder.js";
export * from "./use-lite.js";
export * from "./openai-compatible.js";
export * from "./config.js";
export * from "./cache.js";
