import { describe, expect, it } from "vitest";
import { assemblePack, SECTION_NAMES, type PackChange, type PackClaim, type PackInputs, type PackMemory } from "../../services/hydration/pack.js";
import { o200kTokens } from "../../services/hydration/tokens.js";
import seedrandom from "seedrandom";

const tokens = o200kTokens;

const memory = (id: string, over: Partial<PackMemory> = {}): PackMemory => ({
  memoryId: id,
  version: 1,
  title: `Memory ${id}`,
  kind: "note",
  scope: "app",
  paths: [],
  tags: [],
  body: `Body of ${id}.`,
  importance: 3,
  ...over,
});

const baseInputs = (over: Partial<PackInputs> = {}): PackInputs => ({
  app: "shop",
  agent: "coder-1",
  task: "fix the stripe webhook retries",
  branch: "fix/webhooks",
  paths: ["src/payments/webhook.ts"],
  memoryIndex: { available: true, value: "# Memory index: shop\n\n2 memories.\n\n- [A](app/a.md)\n- [B](app/b.md)\n" },
  relevant: [],
  fragileCandidates: [],
  claims: { available: true, value: [] },
  changes: { since: null, events: [], omittedOlder: 0 },
  ...over,
});

const section = (pack: ReturnType<typeof assemblePack>, name: (typeof SECTION_NAMES)[number]) => pack.sections.find((s) => s.name === name)!;

describe("assemblePack: what goes in, in which order", () => {
  it("puts fragile warnings, others' claims, relevant memories, the index and changes in that order", () => {
    const pack = assemblePack(
      baseInputs({
        fragileCandidates: [memory("frag1", { kind: "fragile", paths: ["src/payments"], title: "Webhook signature check is order-sensitive" })],
        claims: { available: true, value: [{ kind: "lock", name: "src/payments", holder: "coder-2", expiresAt: "2030-01-01T00:00:00.000Z" }] },
        relevant: [{ memory: memory("rel1", { title: "Retries use idempotency keys" }), score: 2 }],
        changes: {
          since: { sessionId: "s1", seq: 10, time: "2030-01-01T00:00:00.000Z", ended: true, task: "earlier" },
          events: [{ seq: 11, time: "2030-01-01T00:01:00.000Z", type: "memory.approved", memoryId: "rel1", title: "Retries use idempotency keys", version: 1, actor: "human:rita", detail: null }],
          omittedOlder: 0,
        },
      }),
      { budget: 4000 },
      tokens,
    );
    const at = (s: string) => pack.markdown.indexOf(s);
    const order = ["## Fragile code on your paths", "## Claimed by others", "## Relevant memories", "## Memory index (MEMORY.md)", "## Changes since your last session"].map(at);
    expect(order.every((i) => i > 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    expect(pack.markdown).toContain("Webhook signature check is order-sensitive");
    expect(pack.markdown).toContain("lock `src/payments` held by coder-2");
    expect(pack.markdown).toContain("overlaps your paths");
    expect(pack.markdown).toContain("approved v1 of \"Retries use idempotency keys\" (`rel1`) by human:rita");
    // MEMORY.md's own level-1 heading is pushed below the pack's section headings.
    expect(pack.markdown).toContain("#### Memory index: shop");
    expect(pack.markdown.match(/^# /gm)).toHaveLength(1);
    expect(pack.tokens).toBe(tokens.count(pack.markdown));
    expect(pack.sections.map((s) => s.name)).toEqual([...SECTION_NAMES]);
    expect(section(pack, "relevant").included).toEqual(["rel1"]);
  });

  it("leaves out the agent's own claims and other agents' scratchpads, and shows fragile memories only once", () => {
    const claims: PackClaim[] = [
      { kind: "task", name: "mine", holder: "coder-1", expiresAt: "2030-01-01T00:00:00.000Z" },
      { kind: "task", name: "theirs", holder: "coder-2", expiresAt: "2030-01-01T00:00:00.000Z" },
    ];
    const fragile = memory("frag", { kind: "fragile", paths: ["src/payments/webhook.ts"] });
    const pack = assemblePack(
      baseInputs({
        claims: { available: true, value: claims },
        fragileCandidates: [fragile, memory("frag-elsewhere", { kind: "fragile", paths: ["src/paymentsX"] })],
        relevant: [
          { memory: fragile, score: 3 },
          { memory: memory("private", { scope: "agent:coder-2" }), score: 2 },
          { memory: memory("own", { scope: "agent:coder-1" }), score: 1 },
        ],
      }),
      { budget: 4000 },
      tokens,
    );
    expect(section(pack, "claims").included).toEqual(["task:theirs"]);
    expect(pack.markdown).not.toContain("`mine`");
    expect(section(pack, "fragile").included).toEqual(["frag"]);
    expect(section(pack, "relevant").included).toEqual(["own"]);
  });

  it("matches fragile memories by whole path segments, either side being the prefix", () => {
    const candidates = [
      memory("folder", { kind: "fragile", paths: ["src/payments/"] }),
      memory("file", { kind: "fragile", paths: ["./src/payments/webhook.ts"] }),
      memory("glob", { kind: "fragile", paths: ["src/**"] }),
      memory("sibling", { kind: "fragile", paths: ["src/pay"] }),
      memory("deeper", { kind: "fragile", paths: ["src/payments/webhook.ts/x"] }),
      memory("not-fragile", { kind: "fact", paths: ["src/payments"] }),
    ];
    const pack = assemblePack(baseInputs({ fragileCandidates: candidates }), { budget: 4000 }, tokens);
    expect(section(pack, "fragile").included.sort()).toEqual(["deeper", "file", "folder", "glob"]);
  });

  it("says what each empty section means instead of leaving it out", () => {
    const pack = assemblePack(baseInputs({ paths: [], memoryIndex: { available: true, value: null }, claims: { available: false, reason: "no claims projection" } }), { budget: 4000 }, tokens);
    expect(pack.markdown).toContain("No paths given (`--paths`)");
    expect(pack.markdown).toContain("Live claims unavailable: no claims projection.");
    expect(pack.markdown).toContain("No active memory matches the task.");
    expect(pack.markdown).toContain("No MEMORY.md yet");
    expect(pack.markdown).toContain("No earlier session of coder-1");
    for (const s of pack.sections) expect(s.dropped).toEqual([]);
  });

  it("names what it dropped: memories by id, older changes by sequence, index lines by number", () => {
    const relevant = Array.from({ length: 30 }, (_, i) => ({ memory: memory(`m${String(i).padStart(2, "0")}`, { body: "word ".repeat(200) }), score: 30 - i }));
    const events: PackChange[] = Array.from({ length: 60 }, (_, i) => ({ seq: 100 + i, time: "2030-01-01T00:00:00.000Z", type: "memory.proposed", memoryId: `c${i}`, title: `Change ${i}`, version: 1, actor: "agent:coder-2", detail: null }));
    const index = ["# Memory index: shop", "", ...Array.from({ length: 150 }, (_, i) => `- [Entry ${i}](app/e${i}.md) fact, importance 3`)].join("\n");
    const pack = assemblePack(
      baseInputs({ relevant, memoryIndex: { available: true, value: index }, changes: { since: { sessionId: "s1", seq: 99, time: "2030-01-01T00:00:00.000Z", ended: true, task: null }, events, omittedOlder: 0 } }),
      { budget: 900 },
      tokens,
    );
    expect(pack.tokens).toBeLessThanOrEqual(900);
    const rel = section(pack, "relevant");
    expect(rel.included.length).toBeGreaterThan(0);
    expect(rel.dropped.length).toBeGreaterThan(0);
    expect(rel.included).toEqual(relevant.slice(0, rel.included.length).map((r) => r.memory.memoryId)); // best first, a prefix
    expect(pack.markdown).toContain(`_${rel.dropped.length} more memories omitted for lack of budget: ${rel.dropped.slice(0, 8).join(", ")}`);
    // Pass 2 gave what was left to relevant memories (higher priority); without them, changes and the index get room.
    const rest = assemblePack(
      baseInputs({ memoryIndex: { available: true, value: index }, changes: { since: { sessionId: "s1", seq: 99, time: "2030-01-01T00:00:00.000Z", ended: true, task: null }, events, omittedOlder: 0 } }),
      // Pass 2 offers leftovers in priority order (the index before changes): give changes a larger share.
      { budget: 1200, shares: { changes: 0.3 } },
      tokens,
    );
    expect(rest.tokens).toBeLessThanOrEqual(1200);
    const changes = section(rest, "changes");
    expect(changes.dropped.length).toBeGreaterThan(0);
    expect(changes.included[0]).toBe("seq:159"); // newest kept, oldest dropped
    expect(rest.markdown).toContain(`${changes.dropped.length} older changes omitted for lack of budget`);
    const idx = section(rest, "index");
    expect(idx.dropped.length).toBeGreaterThan(0);
    expect(rest.markdown).toContain(`${idx.dropped.length} more MEMORY.md lines omitted for lack of budget (${idx.dropped[0]}–${idx.dropped.at(-1)})`);
  });

  it("trims a long body to fit and says so, closing a code block it cut open", () => {
    const body = ["Intro line.", "```ts", ...Array.from({ length: 400 }, (_, i) => `const x${i} = ${i};`), "```", "Outro."].join("\n");
    const pack = assemblePack(baseInputs({ relevant: [{ memory: memory("long", { body }), score: 1 }] }), { budget: 900 }, tokens);
    expect(section(pack, "relevant").trimmed).toEqual(["long"]);
    expect(pack.markdown).toMatch(/_\[body trimmed to \d+ of \d+ tokens; memledger show long\]_/);
    expect((pack.markdown.match(/^```/gm) ?? []).length % 2).toBe(0);
    expect(pack.tokens).toBeLessThanOrEqual(900);
  });

  it("gives budget unused by later sections back to earlier ones that had to drop something", () => {
    const relevant = Array.from({ length: 40 }, (_, i) => ({ memory: memory(`m${i}`, { body: "detail ".repeat(60) }), score: 40 - i }));
    const bare = baseInputs({ relevant, memoryIndex: { available: true, value: null } });
    const pack = assemblePack(bare, { budget: 3000 }, tokens);
    // Relevant's share is 40 %, yet with little else to show it uses most of the budget.
    expect(section(pack, "relevant").tokens).toBeGreaterThan(3000 * 0.6);
    expect(pack.tokens).toBeLessThanOrEqual(3000);
  });

  it("is deterministic and never exceeds the budget, over many random inputs and tiny budgets", () => {
    const random = seeded(20250601);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
    const words = ["stripe", "webhook", "retry", "ключ", "idempotency", "`code`", "# heading", "```", "émoji 🚀", "\n", "\n\n", "  ", "src/payments", "-", "*", "_", "|", "very-long-identifier_with_parts"];
    const text = (n: number) => Array.from({ length: n }, () => pick(words)).join(random() < 0.5 ? " " : "");
    const paths = ["src/payments", "src/payments/webhook.ts", "src/auth", "lib", "src/payments/**"];
    for (let round = 0; round < 150; round++) {
      const mem = (i: number): PackMemory =>
        memory(`id${round}-${i}`, {
          title: text(1 + Math.floor(random() * 12)).replace(/\n/g, " ") || "t",
          body: text(Math.floor(random() * 300)),
          kind: pick(["fragile", "fact", "note"]),
          scope: pick(["app", "org", "agent:coder-1", "agent:other", "team:x"]),
          paths: random() < 0.6 ? [pick(paths)] : [],
          tags: random() < 0.3 ? [text(2).replace(/\s/g, "") || "tag"] : [],
          importance: 1 + Math.floor(random() * 5),
        });
      const inputs = baseInputs({
        task: text(Math.floor(random() * 10)).replace(/\n/g, " "),
        paths: random() < 0.7 ? [pick(paths)] : [],
        memoryIndex: random() < 0.2 ? { available: false, reason: "nope" } : { available: true, value: random() < 0.2 ? null : text(Math.floor(random() * 400)) },
        relevant: Array.from({ length: Math.floor(random() * 15) }, (_, i) => ({ memory: mem(i), score: 10 - i / 2 })),
        fragileCandidates: Array.from({ length: Math.floor(random() * 8) }, (_, i) => mem(100 + i)),
        claims: { available: true, value: Array.from({ length: Math.floor(random() * 10) }, (_, i) => ({ kind: pick(["task", "lock"] as const), name: `${pick(paths)}-${i}`, holder: pick(["coder-1", "coder-2", "coder-3"]), expiresAt: "2030-01-01T00:00:00.000Z" })) },
        changes: {
          since: random() < 0.3 ? null : { sessionId: "s", seq: 5, time: "2030-01-01T00:00:00.000Z", ended: random() < 0.5, task: text(3) || null },
          events: Array.from({ length: Math.floor(random() * 30) }, (_, i) => ({ seq: 6 + i, time: "2030-01-01T00:00:00.000Z", type: pick(["memory.proposed", "memory.approved", "memory.superseded", "memory.rolled_back"]), memoryId: `c${i}`, title: random() < 0.2 ? null : text(4), version: random() < 0.2 ? null : 1 + i, actor: pick(["agent:coder-1", "human:rita"]), detail: random() < 0.3 ? text(5) : null })),
          omittedOlder: random() < 0.1 ? 7 : 0,
        },
      });
      const budget = pick([0, 1, 3, 7, 15, 30, 60, 120, 250, 500, 1000, 2500]);
      const pack = assemblePack(inputs, { budget, maxBodyTokens: pick([5, 50, 350]) }, tokens);
      expect(tokens.count(pack.markdown), `round ${round}, budget ${budget}`).toBeLessThanOrEqual(budget);
      expect(pack.tokens).toBe(tokens.count(pack.markdown));
      // Every item is either shown or named as dropped, never both.
      for (const s of pack.sections) expect(s.included.filter((k) => s.dropped.includes(k))).toEqual([]);
      expect(assemblePack(inputs, { budget, maxBodyTokens: 350 }, tokens)).toEqual(assemblePack(inputs, { budget, maxBodyTokens: 350 }, tokens));
    }
  });

  it("with a budget too small for the header, returns an empty document and says every item was dropped", () => {
    const pack = assemblePack(baseInputs({ relevant: [{ memory: memory("a"), score: 1 }] }), { budget: 3 }, tokens);
    expect(pack.markdown).toBe("");
    expect(pack.tokens).toBe(0);
    expect(section(pack, "relevant")).toMatchObject({ tokens: 0, included: [], dropped: ["a"] });
  });
});

/** Seeded, so the same seed gives the same sequence on every machine and a failure can be replayed. */
const seeded = (seed: number): (() => number) => seedrandom(String(seed));
