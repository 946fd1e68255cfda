import { z } from "zod";
import { REQUESTS, type Verb } from "../../schemas/commands.js";
import { ErrorCode, MemledgerError, invalid } from "../../schemas/errors.js";
import type { MemoryClient } from "../client.js";
import type { ReviewResult } from "../dream/review.js";

type Args = Record<string, unknown>;

/**
 * One MCP tool: a verb of the command service under an agent-facing name. Its arguments are that verb's
 * request (schemas/commands.ts, the same zod schema the service applies), so the tool's JSON schema is
 * derived from it, never restated; `extra` holds the few arguments that exist only on this side (a local
 * file the server reads).
 */
export interface McpTool {
  name: string;
  description: string;
  request: z.ZodType;
  extra?: z.ZodObject;
  call(client: MemoryClient, request: Args, extra: Args): Promise<unknown>;
  /**
   * For a verb that answers item by item (the consolidation review verbs): the first item it refused, if
   * any. Such a reply is returned whole, as an error result, so that an agent cannot read a partly
   * refused call as done (the CLI exits non-zero for the same reply).
   */
  refusal?(result: unknown): MemledgerError | undefined;
}

const send =
  (verb: Verb) =>
  (client: MemoryClient, request: Args): Promise<unknown> =>
    client.request(verb as never, request as never);

/** The first refused item of a consolidation review reply, as the error it carries (services/dream/review.ts). */
const firstRefusal = (result: unknown): MemledgerError | undefined => {
  const refused = (result as ReviewResult).results.find((item) => item.outcome === "refused");
  if (!refused) return undefined;
  const code = (refused.error?.code ?? ErrorCode.conflict) as ErrorCode;
  return new MemledgerError(code, `proposal ${refused.proposalId}: ${refused.error?.message ?? "refused"}`, refused.error?.details ?? {});
};

const TranscriptPathArgs = z.strictObject({
  transcriptPath: z.string().min(1).max(4096).optional(),
});

export const TOOLS: readonly McpTool[] = [
  {
    name: "hydrate",
    description:
      "A markdown context pack for starting work: fragile memories on your paths, others' claims and locks, memories relevant to your task, the app's MEMORY.md, and what changed since your last session. Never over `budget` tokens. A read.",
    request: REQUESTS.hydrate,
    call: (client, r) => client.hydrate(r as never),
  },
  {
    name: "search",
    description: "Hybrid (BM25 + vector) search over the app's and the org's active memories, best first. A read.",
    request: REQUESTS.search,
    // Through the client's search, which adds the server's session (--session) for the exposure receipt.
    call: (client, r) => {
      const { query, ...options } = r;
      return client.search(query as string, options as never);
    },
  },
  {
    name: "get",
    description:
      "One memory: status, active version, every version with its title and body, and `seq`, the sequence to send back as `expectedSeq` when you revise or decide on it.",
    request: REQUESTS.show,
    call: (client, r) => client.show(r.memoryId as string),
  },
  {
    name: "history",
    description:
      "Every version and lifecycle event of one memory, oldest first: who (actor), when, from which session, branch and worktree, why (reason, causation), read from the log. Where the memory's scope is readable to you. A read.",
    request: REQUESTS.history,
    call: (client, r) => client.history(r.memoryId as string),
  },
  {
    name: "propose",
    description:
      "Propose a new memory, or (with `memoryId`) the next version of one. Pass `expectedSeq` (the `seq` from get) so a concurrent change is a conflict, not an overwrite: on conflict the result carries the current memory; re-read it and retry. With `scope: \"session:<your session id>\"` it is a candidate: speculative memory only you see (from that worktree), reviewed when the session ends (promoted to a team or the app, or discarded).",
    request: REQUESTS.propose,
    call: send("propose"),
  },
  { name: "approve", description: "Approve a pending version (default: the pending one) and make it active, where the policy allows you.", request: REQUESTS.approve, call: send("approve") },
  { name: "reject", description: "Reject a pending version, with a reason, where the policy allows you.", request: REQUESTS.reject, call: send("reject") },
  { name: "supersede", description: "Retire a memory, optionally naming the memory that replaces it (`by`).", request: REQUESTS.supersede, call: send("supersede") },
  { name: "rollback", description: "Make an earlier approved version active again (a new event; history is never edited).", request: REQUESTS.rollback, call: send("rollback") },
  { name: "promote", description: "Ask the curator to make the memory's active version org knowledge; the decision appears in get's `promotions`.", request: REQUESTS.promote, call: send("promote") },
  {
    name: "claim",
    description:
      "Claim a task (by id) or, with kind \"lock\", a module or file path, for a lease (ttlMs, default 10 minutes). A conflict names the holder and when the lease ends.",
    request: REQUESTS.claim,
    call: send("claim"),
  },
  { name: "renew", description: "Extend your live lease on a task or lock.", request: REQUESTS.renew, call: send("renew") },
  { name: "release", description: "Let go of a task or lock you hold; `done: true` finishes a task for good.", request: REQUESTS.release, call: send("release") },
  {
    name: "session_start",
    description: "Start a work session (task, branch, worktree); returns its `sessionId`. Hydration's \"changes since your last session\" counts from sessions.",
    request: REQUESTS.session_start,
    call: (client, r) => client.startSession(r as never),
  },
  {
    name: "session_end",
    description:
      "End a session, optionally with a summary and `transcriptPath`: a file on this server's machine, stored in the transcripts object store by its SHA-256 and referenced from the session.ended event.",
    request: REQUESTS.session_end,
    extra: TranscriptPathArgs,
    call: (client, r, extra) => {
      const { sessionId, ...rest } = r;
      const transcriptFile = extra.transcriptPath as string | undefined;
      return client.endSession(sessionId as string, { ...(rest as object), ...(transcriptFile !== undefined ? { transcriptFile } : {}) });
    },
  },
  // Consolidation ("dreaming", docs/consolidation.md): runs propose changes from sessions and transcripts;
  // nothing changes until a reviewer accepts. Reads need read access to the app; deciding needs the
  // policy's `dream` verb, which by default only humans have.
  {
    name: "dream_list",
    description: "The app's consolidation runs (changes proposed from sessions and transcripts), newest first: status, trigger, proposals per phase. A read.",
    request: REQUESTS.dream_list,
    call: send("dream_list"),
  },
  {
    name: "dream_show",
    description:
      "One consolidation run: each proposal's change, evidence (sessions, transcript spans, memories), reason and status (pending, accepted, applied, rejected, reverted). A read. A large run comes in pages: when `proposalsNext` is a number, call again with `from` set to it for the next proposals (`proposalsTotal` counts them all).",
    request: REQUESTS.dream_show,
    call: send("dream_show"),
  },
  {
    name: "dream_accept",
    description:
      "Accept and apply proposals of a completed run (every undecided one when `proposalIds` is empty), where the policy lets you review runs (by default humans only). `results` gives each proposal's outcome and the events written; a refused proposal makes the call an error that still carries every result.",
    request: REQUESTS.dream_accept,
    call: send("dream_accept"),
    refusal: firstRefusal,
  },
  {
    name: "dream_reject",
    description: "Reject proposals of a run (every undecided one when `proposalIds` is empty), with a reason, where the policy lets you review runs. Nothing changes in memory.",
    request: REQUESTS.dream_reject,
    call: send("dream_reject"),
    refusal: firstRefusal,
  },
  {
    name: "dream_revert",
    description: "Undo every applied change of a run as one batch, with compensating memory events (nothing is deleted), where the policy lets you review runs.",
    request: REQUESTS.dream_revert,
    call: send("dream_revert"),
    refusal: firstRefusal,
  },
];

/**
 * The tool's JSON schema: the request's, as input (defaults optional), without `actor` (the server acts as
 * its configured identity, never as an argument says), plus the tool's own extra arguments.
 */
export function toolInputSchema(tool: McpTool): { type: "object"; properties: Record<string, object>; required?: string[]; [k: string]: unknown } {
  const schema = z.toJSONSchema(tool.request, { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
  delete schema.$schema;
  const properties = { ...((schema.properties as Record<string, object> | undefined) ?? {}) };
  delete properties.actor;
  let required = ((schema.required as string[] | undefined) ?? []).filter((name) => name !== "actor");
  if (tool.extra) {
    const extra = z.toJSONSchema(tool.extra, { io: "input" }) as { properties?: Record<string, object>; required?: string[] };
    Object.assign(properties, extra.properties ?? {});
    required = [...required, ...(extra.required ?? [])];
  }
  delete schema.required;
  return { ...schema, type: "object", properties, ...(required.length > 0 ? { required } : {}) };
}

/**
 * Splits and checks a call's arguments: the tool's extra ones, then the request against the very schema the
 * service applies, so a bad argument is `invalid` here (nothing sent) with the same messages.
 */
export function checkArguments(tool: McpTool, raw: unknown): { request: Args; extra: Args } {
  const args = (raw ?? {}) as Args;
  if (typeof args !== "object" || Array.isArray(args)) throw invalid(`${tool.name}: arguments must be an object`);
  if (Object.hasOwn(args, "actor")) {
    throw invalid(`${tool.name}: actor is not an argument: this server acts as its configured identity (--as, MEMLEDGER_AGENT, or its NATS user)`);
  }
  const extraNames = new Set(Object.keys(tool.extra?.shape ?? {}));
  const request: Args = {};
  const extra: Args = {};
  for (const [name, value] of Object.entries(args)) (extraNames.has(name) ? extra : request)[name] = value;
  if (tool.extra) failOn(tool.name, tool.extra.safeParse(extra));
  failOn(tool.name, tool.request.safeParse(request));
  return { request, extra };
}

function failOn(tool: string, result: { success: boolean; error?: z.ZodError }): void {
  if (result.success) return;
  const issues = result.error!.issues;
  const first = issues[0];
  const where = first?.path.length ? first.path.join(".") : "arguments";
  throw invalid(`${tool}: ${where}: ${first?.message ?? "invalid"}`, { issues: issues.map((i) => ({ path: i.path.map(String), message: i.message })) });
}

export interface ToolResult {
  [key: string]: unknown;
  content: { type: "text"; text: string }[];
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
}

export function successResult(tool: McpTool, result: unknown): ToolResult {
  // The pack is read by the model as it is; everything else is data.
  if (tool.name === "hydrate" && result && typeof (result as { markdown?: unknown }).markdown === "string") {
    return { content: [{ type: "text", text: (result as { markdown: string }).markdown }], structuredContent: result as Record<string, unknown> };
  }
  const structured = Array.isArray(result) ? { results: result } : ((result ?? {}) as Record<string, unknown>);
  return { content: [{ type: "text", text: JSON.stringify(result) }], structuredContent: structured };
}

/**
 * A failed call as a tool result (isError), never a protocol error: the agent reads the stable code
 * (schemas/errors.ts) in the text and in structuredContent.error.code, and, for a conflict on a memory, the
 * memory as it is now, so it can re-read and retry without another round trip.
 */
export function errorResult(err: unknown, current?: unknown, reply?: Record<string, unknown>): ToolResult {
  const error =
    err instanceof MemledgerError
      ? { code: err.code, message: err.message, details: err.details }
      : { code: ErrorCode.internal, message: err instanceof Error ? err.message : String(err), details: {} };
  const lines = [`${error.code}: ${error.message}`];
  if (Object.keys(error.details).length > 0) lines.push(`details: ${JSON.stringify(error.details)}`);
  if (current !== undefined) {
    const seq = (current as { seq?: number }).seq;
    lines.push(`current (re-read; retry with expectedSeq ${seq}): ${JSON.stringify(current)}`);
  }
  if (reply !== undefined) lines.push(`reply: ${JSON.stringify(reply)}`);
  return {
    content: [{ type: "text", text: lines.join("\n") }],
    structuredContent: { ...reply, error, ...(current !== undefined ? { current } : {}) },
    isError: true,
  };
}

export async function callTool(client: MemoryClient, tool: McpTool, raw: unknown): Promise<ToolResult> {
  let request: Args = {};
  try {
    const checked = checkArguments(tool, raw);
    request = checked.request;
    const result = await tool.call(client, checked.request, checked.extra);
    const refusal = tool.refusal?.(result);
    return refusal ? errorResult(refusal, undefined, result as Record<string, unknown>) : successResult(tool, result);
  } catch (err) {
    const memoryId = request.memoryId;
    if (err instanceof MemledgerError && err.code === ErrorCode.conflict && typeof memoryId === "string") {
      const current = await client.show(memoryId).catch(() => undefined);
      return errorResult(err, current);
    }
    return errorResult(err);
  }
}
