export { assemblePack, SECTION_NAMES, DEFAULT_SHARES, DEFAULT_MAX_BODY_TOKENS } from "./pack.js";
export type { ContextPack, PackSection, PackInputs, PackOptions, PackMemory, PackClaim, PackChange, PreviousSession, RankedMemory, SectionName, Availability } from "./pack.js";
export { Hydrator } from "./service.js";
export type { HydrationOptions, HydrateInput } from "./service.js";
export { AppCatalog } from "./catalog.js";
export { rankRelevant } from "./retrieval.js";
export { o200kTokens } from "./tokens.js";
export type { TokenCounter } from "./tokens.js";
export { pathsOverlap, normalizePath } from "./paths.js";
