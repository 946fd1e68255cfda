import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { claimIdOf } from "../../commands/claim.js";
import { ClaimRequest, ClaimShowRequest, ReleaseRequest, RenewRequest } from "../../schemas/commands.js";
import { normaliseLockName } from "../../schemas/lock-name.js";

/**
 * Issue 9 item 8, the pure half: one spelling per lock (schemas/lock-name.ts), applied by the claim,
 * renew, release and claim_show request schemas before a name becomes an aggregate id.
 */

const normal = (name: string): string => {
  const result = normaliseLockName(name);
  if (!result.ok) throw new Error(`expected ${JSON.stringify(name)} to have a normal form, got: ${result.reason}`);
  return result.name;
};

/** A path segment as repositories have them: never empty, `.` or `..`, no separator, no surrounding space. */
const segment = fc
  .stringMatching(/^[A-Za-z0-9_.@+-][A-Za-z0-9_.@+ -]{0,10}[A-Za-z0-9_.@+-]$|^[A-Za-z0-9_@+-]$/)
  .filter((s) => s !== "." && s !== ".." && !/^[A-Za-z]:$/.test(s));
/** A normal lock name: segments joined by `/`. */
const normalName = fc.array(segment, { minLength: 1, maxLength: 6 }).map((segments) => segments.join("/"));

/** Ways to spell the same path differently, applied at random places. */
const respell = (name: string, choices: number[]): string => {
  const parts = name.split("/");
  const out: string[] = [];
  parts.forEach((part, i) => {
    const pick = choices[i % choices.length]! % 7;
    if (pick === 1) out.push(".");
    // An empty segment doubles a separator; first in the name it would make the path absolute instead.
    if (pick === 2 && i > 0) out.push("");
    if (pick === 3) out.push("detour", "..");
    if (pick === 4) out.push(`  ${part}  `);
    else out.push(part);
  });
  const first = choices[0]! % 4;
  let text = out.join(choices.length % 2 === 0 ? "/" : "\\");
  if (first === 1) text = `./${text}`;
  if (first === 2) text = `${text}/`;
  if (first === 3) text = ` .//${text}//. `;
  return text;
};

describe("normaliseLockName", () => {
  it("names the issue's three spellings (and trailing slashes, a/./b, a/x/../b, backslashes) as one lock", () => {
    const spellings = [
      "src/payments/webhook.ts",
      "./src/payments/webhook.ts",
      "src//payments/webhook.ts",
      "src/payments/webhook.ts/",
      "src/./payments/webhook.ts",
      "src/x/../payments/webhook.ts",
      "src\\payments\\webhook.ts",
      ".\\src\\payments\\\\webhook.ts",
      " src/payments/webhook.ts ",
    ];
    for (const name of spellings) expect(normal(name)).toBe("src/payments/webhook.ts");
    expect(new Set(spellings.map((name) => claimIdOf("lock", normal(name)))).size).toBe(1);
    // NFC: the same name typed as decomposed characters.
    expect(normal("docs/cafe\u0301.md")).toBe("docs/caf\u00e9.md");
    // The root of the repository, however spelled.
    for (const root of [".", "./", "a/..", ".//."]) expect(normal(root)).toBe(".");
  });

  it("refuses a path that climbs out of the repository or is absolute, saying which", () => {
    for (const name of ["../x", "..", "a/../../x", "./../x", "src/../../etc/passwd", "..\\x"]) {
      expect(normaliseLockName(name)).toEqual({ ok: false, reason: expect.stringMatching(/climbs out of the repository/) });
    }
    for (const name of ["/etc/passwd", "/", "//server/share", "C:\\repo\\src\\a.ts", "c:/repo", "C:", "~/repo/a.ts", "~", "\\src\\a.ts", "a/../C:/x", "./~/x"]) {
      expect(normaliseLockName(name)).toEqual({ ok: false, reason: expect.stringMatching(/is absolute/) });
    }
    // Names that only look like those are ordinary names.
    for (const name of ["~backup/a.ts", "db:migrations", "a:b", "src/..hidden", "...", "src/.env"]) expect(normaliseLockName(name).ok).toBe(true);
  });

  it("leaves every normal name as it is, so lock ids stored before normalisation keep their aggregate", () => {
    fc.assert(fc.property(normalName, (name) => normal(name) === name && claimIdOf("lock", normal(name)) === claimIdOf("lock", name)), { numRuns: 500, seed: 9 });
    for (const stored of ["src/services/client.ts", "src/payments", "src/y.ts", "src/old.ts", "payments-module", "src/payments/**", "@scope/pkg"]) {
      expect(normal(stored)).toBe(stored);
    }
  });

  it("is idempotent, for any text at all", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: fc.constantFrom("a", "/", "\\", ".", " ", "~", ":", "C", "\u0301", "e") , maxLength: 30 })), (text) => {
        const once = normaliseLockName(text);
        if (!once.ok) return true;
        const twice = normaliseLockName(once.name);
        return twice.ok && twice.name === once.name;
      }),
      { numRuns: 2000, seed: 8 },
    );
  });

  it("gives equivalent spellings of a path the same name", () => {
    fc.assert(
      fc.property(normalName, fc.array(fc.nat(100), { minLength: 1, maxLength: 8 }), (name, choices) => normal(respell(name, choices)) === name),
      { numRuns: 1000, seed: 7 },
    );
  });
});

describe("the claim request schemas apply it to locks, never to tasks", () => {
  it("claim, renew, release and claim_show carry the normal name; a path outside the repository is refused", () => {
    for (const schema of [ClaimRequest, RenewRequest, ReleaseRequest, ClaimShowRequest]) {
      expect(schema.parse({ kind: "lock", name: "./src//payments/webhook.ts/" }).name).toBe("src/payments/webhook.ts");
      const refused = schema.safeParse({ kind: "lock", name: "../secrets/prod.env" });
      expect(refused.success).toBe(false);
      expect(refused.error?.issues[0]).toMatchObject({ path: ["name"], message: expect.stringMatching(/climbs out of the repository/) });
    }
    // Task names are ids: untouched (and a task named like a path is refused as before).
    expect(ClaimRequest.parse({ name: "refactor-auth" }).name).toBe("refactor-auth");
    expect(ClaimRequest.safeParse({ name: "./refactor-auth" }).success).toBe(false);
  });
});
