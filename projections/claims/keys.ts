import { internal } from "../../schemas/errors.js";
/**
 * The Redis key layout of the `claims` projection. Every key of one app lives under one root,
 * `<keyPrefix>:<app>`, and every key of one generation under `<root>:{<generation>}:` (the braces are a
 * Redis Cluster hash tag: one generation's keys share a slot, so its MULTI/EXEC works on a cluster too).
 *
 *   <root>:current                        string   the generation readers use (flipped by promote)
 *   <gen>:checkpoint                      string   last stream sequence applied (same MULTI as the changes)
 *   <gen>:state:<claimId>                 string   JSON of the folded per-claim state (no expiry)
 *   <gen>:claim:<claimId>                 hash     who holds it until when; PEXPIREAT = lease expiry
 *   <gen>:agent:<agentId>                 zset     claimIds the agent holds, score = expiry ms;
 *                                                  PEXPIREAT = its latest lease; readers drop expired members
 *   <gen>:live                            zset     every held claimId, score = expiry ms (same rules)
 *   <gen>:tasks:open                      zset     tasks not done, score = priority * 1e13 + openedAt ms
 *   <gen>:task:<claimId>                  hash     an open task's name, title, priority, openedAt
 */
export interface GenerationKeys {
  generation: string;
  /** `<root>:{<generation>}`: every key of the generation starts with it. */
  ns: string;
  /** SCAN MATCH pattern for every key of the generation. */
  pattern: string;
  checkpoint: string;
  state(claimId: string): string;
  claim(claimId: string): string;
  agent(agentId: string): string;
  live: string;
  openTasks: string;
  task(claimId: string): string;
}

export interface ClaimKeys {
  root: string;
  /** SCAN MATCH pattern for every key of the app (all generations and the pointer). */
  pattern: string;
  pointer: string;
  generation(generation: string): GenerationKeys;
}

/** Escapes glob characters so a literal can be used in SCAN MATCH. */
export const escapeGlob = (literal: string): string => literal.replace(/[*?[\]\\]/g, (c) => `\\${c}`);

export function claimKeys(keyPrefix: string, app: string): ClaimKeys {
  if (keyPrefix.length === 0) throw internal("claims projection: keyPrefix must not be empty");
  const root = `${keyPrefix}:${app}`;
  return {
    root,
    pattern: `${escapeGlob(root)}:*`,
    pointer: `${root}:current`,
    generation(generation) {
      const ns = `${root}:{${generation}}`;
      return {
        generation,
        ns,
        pattern: `${escapeGlob(ns)}:*`,
        checkpoint: `${ns}:checkpoint`,
        state: (id) => `${ns}:state:${id}`,
        claim: (id) => `${ns}:claim:${id}`,
        agent: (agentId) => `${ns}:agent:${agentId}`,
        live: `${ns}:live`,
        openTasks: `${ns}:tasks:open`,
        task: (id) => `${ns}:task:${id}`,
      };
    },
  };
}
