import { z } from "zod";

/**
 * Documented input limits. They keep a single event far below JetStream's 1 MB payload limit and keep
 * the markdown projection and the search index sane. docs/commands-and-errors.md lists them.
 */
export const LIMITS = {
  idLength: 64,
  appLength: 32,
  titleLength: 200,
  bodyBytes: 32 * 1024,
  tags: 32,
  tagLength: 64,
  paths: 64,
  pathLength: 512,
  reasonLength: 2000,
  taskLength: 2000,
  keyLength: 128,
  refLength: 1024,
  branchLength: 255,
} as const;

/** Subject-token safe: no dots, wildcards, whitespace or control characters, so ids can name subjects. */
const TOKEN = /^[A-Za-z0-9_-]+$/;
// Control characters (C0, DEL, C1) and the Unicode line/paragraph separators have no place in one-line text.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
// Multi-line text keeps \t \n \r but nothing else from the control range.
const CONTROL_EXCEPT_WHITESPACE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/;

export const Id = z
  .string()
  .min(1, "must not be empty")
  .max(LIMITS.idLength, `at most ${LIMITS.idLength} characters`)
  .regex(TOKEN, "only letters, digits, '_' and '-'");

export const AppName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]*$/, "lowercase letters, digits, '_' and '-', starting with a letter or digit")
  .max(LIMITS.appLength);

/**
 * Where a memory lives: one agent's scratchpad, a team, the whole app, or the org; or one session's
 * candidates (`session:<id>`): speculative memories only the session's agent sees, reviewed at its end
 * (consolidation, issue 13).
 */
export const Scope = z
  .string()
  .regex(
    /^(app|org|agent:[A-Za-z0-9_-]{1,64}|team:[A-Za-z0-9_-]{1,64}|session:[A-Za-z0-9_-]{1,64})$/,
    "one of app, org, agent:<id>, team:<name>, session:<id>",
  );
export type Scope = z.infer<typeof Scope>;

export const oneLine = (max: number) =>
  z
    .string()
    .max(max, `at most ${max} characters`)
    .refine((s) => !CONTROL.test(s), "must not contain control characters");

export const nonEmptyLine = (max: number) =>
  oneLine(max).refine((s) => s.trim().length > 0, "must not be blank");

export const Markdown = z
  .string()
  .refine((s) => s.trim().length > 0, "must not be blank")
  .refine((s) => Buffer.byteLength(s, "utf8") <= LIMITS.bodyBytes, `at most ${LIMITS.bodyBytes} bytes`)
  .refine((s) => !CONTROL_EXCEPT_WHITESPACE.test(s), "must not contain control characters other than tab and newline");

export const ActorKind = z.enum(["agent", "human", "service"]);
export type ActorKind = z.infer<typeof ActorKind>;

export const Actor = z.strictObject({ kind: ActorKind, id: Id });
export type Actor = z.infer<typeof Actor>;

export const MemoryKind = z.enum(["note", "fact", "decision", "convention", "procedure", "fragile"]);
export type MemoryKind = z.infer<typeof MemoryKind>;

export const Tag = nonEmptyLine(LIMITS.tagLength).refine((s) => !s.includes(","), "must not contain ','");
export const FilePath = nonEmptyLine(LIMITS.pathLength).refine((s) => !s.includes(","), "must not contain ','");
export const Importance = z.number().int().min(1).max(5);
export const Version = z.number().int().min(1);
export const Sequence = z.number().int().min(0);

export const GitContext = z.strictObject({
  branch: oneLine(LIMITS.branchLength).optional(),
  worktree: oneLine(LIMITS.refLength).optional(),
});
export type GitContext = z.infer<typeof GitContext>;
