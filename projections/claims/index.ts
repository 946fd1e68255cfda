export { claimsProjection, RedisClaimsTarget, unlinkMatching } from "./target.js";
export type { ClaimsProjection, ClaimsProjectionOptions } from "./target.js";
export { liveClaims, openTasks, claimsReader } from "./reader.js";
export type { LiveClaim, OpenTask, ClaimsReader } from "./reader.js";
export { claimKeys, escapeGlob } from "./keys.js";
export type { ClaimKeys, GenerationKeys } from "./keys.js";
export { claimCommands, planBatch, foldClaim, isClaimEvent, openTaskScore, serializeState, parseState } from "./model.js";
export type { RedisCommand, StoredClaimState } from "./model.js";
