export { Curator, CURATOR_ACTOR, CURATOR_DURABLE, orgMemoryIdOf } from "./curator.js";
export type { CuratorOptions } from "./curator.js";
export {
  CuratorPolicy,
  DEFAULT_CURATOR_POLICY,
  appSpecificity,
  assessCandidate,
  decidePromotion,
  mergedContent,
  secretReasons,
  similarity,
} from "./policy.js";
export type { CuratorPolicyInput, OrgIndexView, OrgMemoryView, PromotedContent, PromotionCandidate, PromotionDecision } from "./policy.js";
export { scanSecrets } from "./secrets.js";
export type { SecretFinding, ScannedField } from "./secrets.js";
export { OrgView } from "./org-view.js";
export { loadCuratorPolicy, resolveCuratorPolicy } from "./load.js";
