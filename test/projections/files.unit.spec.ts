import { lstat, mkdtemp, readdir, readFile, readlink, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { memoryDecider, type MemoryCommand, type MemoryState } from "../../commands/memory.js";
import { LedgerEvent } from "../../schemas/events.js";
import { rawEnvelope, type FakeMetadata } from "../../testing/index.js";
import type { MemoryKind } from "../../schemas/primitives.js";
import {
  filesProjection,
  listFiles,
  listMemoryFiles,
  readMemoryIndex,
  readScratchpadIndex,
  renderMemoryIndex,
  safeSegment,
  treeHash,
  type IndexEntry,
} from "../../projections/files/index.js";
import type { ProjectedEvent, ProjectionScope, ProjectionTarget } from "../../projections/projection.js";
import { isPlainYamlString, plainYaml } from "../../projections/files/render.js";
import seedrandom from "seedrandom";

// ---- synthetic events ------------------------------------------------------------------------------

const EPOCH = Date.parse("2025-01-01T00:00:00.000Z");
const APP: ProjectionScope = { prefix: "t", app: "app1", stream: "t_app1" };

interface EnvelopeOptions {
  scope?: string;
  actor?: { kind: "agent" | "human" | "service"; id: string };
  sessionId?: string | null;
  branch?: string | null;
  app?: string;
}

/**
 * A stored event at stream position `seq`, with an id and time derived from it. Not schema-checked, so
 * tests can feed what a buggy or hostile writer might have stored; `valid` wraps it in the schema.
 */
function rawEvent(seq: number, aggregateId: string, type: string, data: object, options: EnvelopeOptions = {}): ProjectedEvent {
  const event = rawEnvelope({ type, data }, {
    aggregateId,
    app: options.app ?? "app1",
    scope: options.scope ?? "app",
    actor: options.actor ?? { kind: "agent", id: "agent-a" },
    sessionId: options.sessionId === undefined ? "session-1" : options.sessionId,
    git: options.branch === null ? null : { branch: options.branch ?? "main" },
    time: new Date(EPOCH + seq * 1000).toISOString(),
  } as FakeMetadata, seq);
  return { seq, subject: `t.app1.memory.${aggregateId}`, event: event as LedgerEvent };
}

const valid = (projected: ProjectedEvent): ProjectedEvent => ({ ...projected, event: LedgerEvent.parse(projected.event) });

const content = (title: string, overrides: Partial<{ kind: MemoryKind; importance: number; tags: string[]; paths: string[]; body: string }> = {}) => ({
  title,
  body: overrides.body ?? `Body of ${title}.\n\nSecond paragraph.`,
  kind: overrides.kind ?? "convention",
  tags: overrides.tags ?? ["tooling"],
  paths: overrides.paths ?? ["package.json"],
  importance: overrides.importance ?? 3,
});

/** Seeded, so the same seed gives the same sequence on every machine and a failure can be replayed. */
const prng = (seed: number): (() => number) => seedrandom(String(seed));

const KINDS: MemoryKind[] = ["note", "fact", "decision", "convention", "procedure", "fragile"];
const SCOPES = ["app", "org", "agent:agent-a", "team:core"];
const ACTORS = [
  { kind: "agent", id: "agent-a" },
  { kind: "agent", id: "agent-b" },
  { kind: "human", id: "alice" },
] as const;

/**
 * A realistic mixed history: commands chosen at random are passed through the real decider, so every
 * event is one the command service could have appended (proposals, revisions, approvals, rejections,
 * rollbacks, supersessions), interleaved with session events the projection must skip.
 */
function mixedHistory(memories: number, length: number, seed = 7): ProjectedEvent[] {
  const random = prng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const states = new Map<string, MemoryState>();
  const slots = new Map<number, string>();
  const out: ProjectedEvent[] = [];
  while (out.length < length) {
    const seq = out.length + 1;
    if (random() < 0.05) {
      out.push(valid(rawEvent(seq, `session-${seq}`, "session.started", { agentId: "agent-a", task: "work", branch: null, worktree: null })));
      continue;
    }
    const index = Math.floor(random() * memories);
    // A superseded memory is done; its slot continues with a new memory, so the history never runs dry.
    let id = slots.get(index) ?? `mem-${index}`;
    if (states.get(id)?.superseded) slots.set(index, (id = `mem-${index}-${seq}`));
    const state = states.get(id) ?? memoryDecider.initialState();
    const scope = state.scope ?? SCOPES[index % SCOPES.length]!;
    const propose: MemoryCommand = {
      type: "propose",
      revision: state.id !== null,
      scope,
      ...content(`Memory ${index} revision ${state.versions.length + 1}`, {
        kind: pick(KINDS),
        importance: 1 + Math.floor(random() * 5),
        tags: [pick(["tooling", "db", "ci", "api"])],
      }),
    };
    const roll = random();
    const command: MemoryCommand =
      roll < 0.35
        ? propose
        : roll < 0.7
          ? { type: "approve" }
          : roll < 0.8
            ? { type: "reject", reason: "not accurate" }
            : roll < 0.93
              ? { type: "rollback", toVersion: 1 + Math.floor(random() * Math.max(1, state.versions.length)) }
              : { type: "supersede", by: random() < 0.5 ? `mem-${(index + 1) % memories}` : null, reason: "replaced" };
    let decided;
    try {
      decided = memoryDecider.decide(command, state);
    } catch {
      decided = memoryDecider.decide(propose, state);
    }
    const projected = valid(
      rawEvent(seq, id, decided.type, decided.data, {
        scope,
        actor: pick(ACTORS),
        sessionId: pick(["session-1", "session-2", null]),
        branch: pick(["main", "feat/x", null]),
      }),
    );
    states.set(id, memoryDecider.evolve(state, projected.event as never));
    out.push(projected);
  }
  return out;
}

// ---- fixtures --------------------------------------------------------------------------------------

let tmp: string;
let root: string;
const open: ProjectionTarget[] = [];

beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "memledger-files-"));
  root = path.join(tmp, "files");
});

afterEach(async () => {
  for (const target of open.splice(0)) await target.close();
  await rm(tmp, { recursive: true, force: true });
});

async function openLive(options: { root?: string; failAfterWrites?: number } = {}) {
  const target = await filesProjection({ root: options.root ?? root, failAfterWrites: options.failAfterWrites }).openLive(APP);
  open.push(target);
  return target;
}

async function applyAll(target: ProjectionTarget, events: ProjectedEvent[]): Promise<void> {
  await target.apply(events);
  await target.commit(events.at(-1)?.seq ?? 0);
}

async function frontMatterOf(relative: string): Promise<{ meta: Record<string, any>; text: string }> {
  const text = await readFile(path.join(root, "app1", relative), "utf8");
  const match = /^---\n([\s\S]*?)\n---\n/.exec(text);
  expect(match, `front matter in ${relative}`).not.toBeNull();
  return { meta: parseYaml(match![1]!), text };
}

// ---- tests -----------------------------------------------------------------------------------------

describe("files projection: memory files", () => {
  it("shows the active version with its provenance, a pending revision as pending, and the index links to it", async () => {
    const target = await openLive();
    await applyAll(target, [
      valid(rawEvent(1, "mem-1", "memory.proposed", { version: 1, ...content("Use pnpm", { importance: 4 }) }, { branch: "feat/pnpm", sessionId: "s-7" })),
      valid(rawEvent(2, "mem-1", "memory.approved", { version: 1 }, { actor: { kind: "human", id: "alice" }, sessionId: null, branch: "main" })),
      valid(rawEvent(3, "mem-1", "memory.proposed", { version: 2, ...content("Use pnpm 9", { importance: 5 }) })),
    ]);

    const { meta, text } = await frontMatterOf("app/mem-1.md");
    expect(meta).toMatchObject({
      id: "mem-1",
      app: "app1",
      status: "active",
      activeVersion: 1,
      version: 1,
      pendingVersions: [2],
      scope: "app",
      kind: "convention",
      tags: ["tooling"],
      paths: ["package.json"],
      importance: 4,
      seq: 3,
      provenance: {
        proposedBy: "agent:agent-a",
        proposedInSession: "s-7",
        proposedOnBranch: "feat/pnpm",
        proposedAt: new Date(EPOCH + 1000).toISOString(),
        approvedBy: "human:alice",
        approvedInSession: null,
        approvedOnBranch: "main",
        approvedAt: new Date(EPOCH + 2000).toISOString(),
      },
    });
    expect(text).toContain("\n# Use pnpm\n\nBody of Use pnpm.\n\nSecond paragraph.\n");
    expect(text).not.toContain("Use pnpm 9");
    expect(await readMemoryIndex(root, "app1")).toContain("- [Use pnpm](app/mem-1.md) (convention; importance 4)");
    expect(await listMemoryFiles(root, "app1")).toEqual(["app/mem-1.md"]);
  });

  it("shows a never-approved memory as proposed, a rolled-back one at its older body, and keeps superseded and rejected files out of the index", async () => {
    const target = await openLive();
    await applyAll(target, [
      valid(rawEvent(1, "new-1", "memory.proposed", { version: 1, ...content("Draft idea") }, { scope: "team:core" })),
      valid(rawEvent(2, "rb-1", "memory.proposed", { version: 1, ...content("Timeout is 5s") })),
      valid(rawEvent(3, "rb-1", "memory.approved", { version: 1 })),
      valid(rawEvent(4, "rb-1", "memory.proposed", { version: 2, ...content("Timeout is 9s") })),
      valid(rawEvent(5, "rb-1", "memory.approved", { version: 2 })),
      valid(rawEvent(6, "rb-1", "memory.rolled_back", { fromVersion: 2, toVersion: 1 })),
      valid(rawEvent(7, "old-1", "memory.proposed", { version: 1, ...content("Old way") }, { scope: "agent:agent-b" })),
      valid(rawEvent(8, "old-1", "memory.approved", { version: 1 })),
      valid(rawEvent(9, "old-1", "memory.superseded", { by: "rb-1", reason: "merged" })),
      valid(rawEvent(10, "rej-1", "memory.proposed", { version: 1, ...content("Wrong claim") })),
      valid(rawEvent(11, "rej-1", "memory.rejected", { version: 1, reason: "false" })),
    ]);

    const proposed = await frontMatterOf("team/core/new-1.md");
    expect(proposed.meta).toMatchObject({ status: "proposed", activeVersion: null, version: 1, scope: "team:core" });
    expect(proposed.meta.provenance.approvedBy).toBeNull();

    const rolledBack = await frontMatterOf("app/rb-1.md");
    expect(rolledBack.meta).toMatchObject({ status: "active", activeVersion: 1, version: 1, seq: 6 });
    expect(rolledBack.text).toContain("# Timeout is 5s");

    const superseded = await frontMatterOf("agent/agent-b/old-1.md");
    expect(superseded.meta).toMatchObject({ status: "superseded", supersededBy: "rb-1", supersededReason: "merged" });

    const rejected = await frontMatterOf("app/rej-1.md");
    expect(rejected.meta).toMatchObject({ status: "rejected", activeVersion: null, rejectedReason: "false" });

    const index = (await readMemoryIndex(root, "app1"))!;
    expect(index).toContain("(team/core/new-1.md)");
    expect(index).toContain("proposed, not yet approved");
    expect(index).toContain("(app/rb-1.md)");
    expect(index).not.toContain("old-1");
    expect(index).not.toContain("rej-1");
    expect(await listMemoryFiles(root, "app1")).toEqual(["agent/agent-b/old-1.md", "app/rb-1.md", "app/rej-1.md", "team/core/new-1.md"]);
  });
});

describe("files projection: determinism, crashes and idempotency", () => {
  const history = mixedHistory(60, 1500);

  it("the history exercises every kind of memory event, all the way to its end", () => {
    const counts = new Map<string, number>();
    for (const e of history) counts.set(e.event.type, (counts.get(e.event.type) ?? 0) + 1);
    expect(Math.min(...counts.values())).toBeGreaterThan(20);
    expect(history.slice(-30).filter((e) => e.event.type.startsWith("memory.")).length).toBeGreaterThan(20);
    expect([...counts.keys()].sort()).toEqual([
      "memory.approved",
      "memory.proposed",
      "memory.rejected",
      "memory.rolled_back",
      "memory.superseded",
      "session.started",
    ]);
  });

  it("applied in small batches with crashes (before a commit and in the middle of one), reaches the same tree as one uninterrupted run", async () => {
    const oneGo = await openLive({ root: path.join(tmp, "one-go") });
    await applyAll(oneGo, history);
    const expected = await treeHash(path.join(tmp, "one-go"), { includeHidden: true });

    const crashRoot = path.join(tmp, "crashy");
    const random = prng(42);
    let target = await openLive({ root: crashRoot });
    let crashes = 0;
    let tornCommits = 0;
    while (target.checkpoint.seq < history.length) {
      // Resume from the checkpoint, as the runner does after a restart.
      const from = target.checkpoint.seq;
      const batch = history.filter((e) => e.seq > from).slice(0, 1 + Math.floor(random() * 40));
      await target.apply(batch);
      const roll = random();
      if (roll < 0.15) {
        await target.close(); // process died before commit: the buffered batch is lost
        target = await openLive({ root: crashRoot });
        crashes++;
      } else if (roll < 0.4) {
        // Process died in the middle of a commit: reopen on the same files with a write budget that runs
        // out somewhere among the memory files, just before MEMORY.md, or just before the checkpoint.
        await target.close();
        const memoryWrites = 2 * new Set(batch.filter((e) => e.event.type.startsWith("memory.")).map((e) => e.event.aggregateId)).size;
        const budgets = [1 + Math.floor(random() * Math.max(1, memoryWrites - 1)), memoryWrites, memoryWrites + 1];
        const torn = await openLive({ root: crashRoot, failAfterWrites: budgets[Math.floor(random() * budgets.length)]! });
        await torn.apply(batch);
        const failed = await torn.commit(batch.at(-1)!.seq).then(
          () => false,
          () => true,
        );
        await torn.close();
        if (failed) tornCommits++;
        target = await openLive({ root: crashRoot });
      } else {
        await target.commit(batch.at(-1)!.seq);
      }
    }
    expect(crashes).toBeGreaterThan(3);
    expect(tornCommits).toBeGreaterThan(3);
    expect(await treeHash(crashRoot, { includeHidden: true })).toBe(expected);
    expect(await treeHash(crashRoot)).toBe(await treeHash(path.join(tmp, "one-go")));
  });

  it.each([
    ["after the memory files, before MEMORY.md", 0],
    ["after MEMORY.md, before the checkpoint", 1],
  ])("a crash on the last batch %s is repaired by redelivering that batch", async (_label, extraWrites) => {
    const reference = path.join(tmp, "reference");
    await applyAll(await openLive({ root: reference }), history);

    const head = history.slice(0, -30);
    const tail = history.slice(-30);
    await applyAll(await openLive(), head);
    const memoryWrites = 2 * new Set(tail.filter((e) => e.event.type.startsWith("memory.")).map((e) => e.event.aggregateId)).size;
    expect(memoryWrites).toBeGreaterThan(0);
    const torn = await openLive({ failAfterWrites: memoryWrites + extraWrites });
    await torn.apply(tail);
    await expect(torn.commit(history.length)).rejects.toThrow(/simulated crash/);
    await torn.close();

    const resumed = await openLive();
    expect(resumed.checkpoint.seq).toBe(head.at(-1)!.seq); // the checkpoint never ran ahead of the files
    await applyAll(resumed, tail);
    expect(await treeHash(root, { includeHidden: true })).toBe(await treeHash(reference, { includeHidden: true }));
  });

  it("re-applying events at or below the checkpoint, or the same event twice, changes nothing", async () => {
    const target = await openLive();
    await applyAll(target, history);
    const before = await treeHash(root, { includeHidden: true });

    await applyAll(target, history);
    await target.apply([history[10]!, history[10]!, history[500]!]);
    await target.commit(history.length);
    expect(await treeHash(root, { includeHidden: true })).toBe(before);

    // A fresh target fed every event twice (each duplicate right after the original) ends where a single pass does.
    const twiceRoot = path.join(tmp, "twice");
    const twice = await openLive({ root: twiceRoot });
    await twice.apply(history.flatMap((e) => [e, e]));
    await twice.commit(history.length);
    expect(await treeHash(twiceRoot, { includeHidden: true })).toBe(before);
  });

  it("resumes after a restart from its checkpoint, with every memory's pending versions intact", async () => {
    const first = await openLive();
    expect(first.checkpoint).toEqual({ seq: 0, generation: "1" });
    await applyAll(first, [valid(rawEvent(1, "mem-1", "memory.proposed", { version: 1, ...content("Pending one") }))]);
    await first.close();

    const second = await openLive();
    expect(second.checkpoint).toEqual({ seq: 1, generation: "1" });
    await applyAll(second, [valid(rawEvent(2, "mem-1", "memory.approved", { version: 1 }))]);
    expect((await frontMatterOf("app/mem-1.md")).meta).toMatchObject({ status: "active", activeVersion: 1, seq: 2 });
  });
});

describe("files projection: MEMORY.md stays small", () => {
  it("with 10,000 memories: at most 200 lines and 25,600 bytes, ordered by importance, ending with how many are left out", async () => {
    const events: ProjectedEvent[] = [];
    for (let i = 0; i < 10_000; i++) {
      const id = `mem-${String(i).padStart(5, "0")}`;
      const data = { version: 1, ...content(`Memory number ${i}`, { importance: 1 + (i % 5), kind: KINDS[i % KINDS.length]! }) };
      events.push(rawEvent(events.length + 1, id, "memory.proposed", data, { scope: SCOPES[i % SCOPES.length]! }));
      if (i % 10 !== 0) events.push(rawEvent(events.length + 1, id, "memory.approved", { version: 1 }));
    }
    const target = await openLive();
    await applyAll(target, events);

    const index = (await readMemoryIndex(root, "app1"))!;
    const lines = index.trimEnd().split("\n");
    expect(lines.length).toBeLessThanOrEqual(200);
    expect(Buffer.byteLength(index)).toBeLessThanOrEqual(25_600);
    const entries = lines.filter((line) => line.startsWith("- ["));
    expect(entries.length).toBeGreaterThan(100);
    // A quarter of them are agent-a's scratchpad: not in the shared index, in agent-a's own (capped too).
    expect(lines.at(-1)).toBe(`- …and ${7_500 - entries.length} more memories not listed here: see the scope folders next to this file.`);
    expect(entries.some((line) => line.includes("](agent/"))).toBe(false);
    const scratchpad = (await readScratchpadIndex(root, "app1", "agent-a"))!;
    expect(scratchpad.trimEnd().split("\n").length).toBeLessThanOrEqual(200);
    expect(Buffer.byteLength(scratchpad)).toBeLessThanOrEqual(25_600);
    expect(scratchpad).toMatch(/^# Scratchpad index: app1, agent agent-a\n/);
    expect(scratchpad).toMatch(/\]\(\.\.\/\.\.\/agent\/agent-a\/mem-[0-9]+\.md\)/);
    expect(scratchpad.trimEnd().split("\n").at(-1)).toMatch(/^- …and [0-9]+ more memories not listed here/);
    const importances = entries.map((line) => Number(/importance (\d)\)$/.exec(line)![1]));
    expect(importances.every((value) => value === 5)).toBe(true);
    // Most recent first among equals: the highest-numbered memories of importance 5 come first.
    expect(entries[0]).toContain("(team/core/mem-09999.md)");
    expect(entries[1]).toContain("(org/mem-09989.md)"); // mem-09994 is agent-a's: in its own index
    expect(scratchpad.split("\n").find((line) => line.startsWith("- ["))).toContain("(../../agent/agent-a/mem-09994.md)");
    expect((await listMemoryFiles(root, "app1")).length).toBe(10_000);
  });

  it("caps bytes too when titles are long and wide, and lists everything when it fits", () => {
    const wide = "記憶🧠".repeat(70); // 210 code points, 3-4 bytes each
    const many: IndexEntry[] = Array.from({ length: 10_000 }, (_, i) => ({
      id: `m${i}`,
      file: `team/${"t".repeat(64)}/m${i}.md`,
      title: wide,
      kind: "fact",
      importance: 5,
      status: "active",
      scope: `team:${"t".repeat(64)}`,
      seq: i + 1,
    }));
    const big = renderMemoryIndex("app1", many);
    expect(Buffer.byteLength(big)).toBeLessThanOrEqual(25_600);
    expect(big.trimEnd().split("\n").length).toBeLessThan(200); // the byte budget binds first here
    const listedCount = big.split("\n").filter((line) => line.startsWith("- [")).length;
    expect(big).toContain(`- …and ${10_000 - listedCount} more memories not listed here`);
    expect(renderMemoryIndex("app1", [...many].reverse())).toBe(big); // order of input does not matter

    const few = renderMemoryIndex("app1", many.slice(0, 3));
    expect(few.split("\n").filter((line) => line.startsWith("- [")).length).toBe(3);
    expect(few).not.toContain("more memories not listed");
  });
});

describe("files projection: hostile input stays inside the root", () => {
  const hostileIds = [
    "../../../escaped",
    "/etc/passwd",
    "..",
    ".",
    "",
    "nul\u0000byte",
    "x".repeat(5000),
    "\u202Egnp.exe", // right-to-left override
    "..\uFF0F..\uFF0Fescaped", // fullwidth solidus: NFKC turns it into '/'
    "\uFF0E\uFF0E", // fullwidth full stops: '..' after NFKC
    "a/b",
    "a_b", // must not collide with the sanitised "a/b"
    "C:\\Windows\\system32",
    "normal-id",
  ];
  const hostileScopes = ["../../../escaped-scope", "team:../../x", "agent:/etc", "team:\uFF0E\uFF0E", "/abs"];

  it("sanitises every segment, writes nothing outside <root> and <root>.gen, and loses no memory to a collision", async () => {
    const events: ProjectedEvent[] = [];
    hostileIds.forEach((id, i) => {
      const scope = hostileScopes[i % hostileScopes.length]!;
      const title = `evil](../../x)\n# injected <script>\u202E ${i}`;
      events.push(
        rawEvent(events.length + 1, id, "memory.proposed", {
          version: 1,
          title,
          body: "---\nstatus: forged\n---\n",
          kind: "note",
          tags: ["../../tag", "a\nb: c"],
          paths: ["/etc/shadow", "..\\..\\x"],
          importance: 3,
        }, { scope }),
      );
      events.push(rawEvent(events.length + 1, id, "memory.approved", { version: 1 }, { scope }));
    });
    const hostileScope: ProjectionScope = { prefix: "t", app: "../../evil-app", stream: "t_x" };
    for (const scope of [APP, hostileScope]) {
      const target = await filesProjection({ root }).openLive(scope);
      open.push(target);
      await applyAll(target, events);
    }

    // Everything written lies under <root> or <root>.gen, and every name is from the safe alphabet.
    const everything = await listFiles(tmp, { includeHidden: true });
    expect(everything.length).toBeGreaterThan(0);
    for (const file of everything) {
      expect(file.startsWith("files/") || file.startsWith("files.gen/"), file).toBe(true);
      for (const segment of file.split("/")) {
        expect(segment, file).toMatch(/^[A-Za-z0-9_.-]{1,90}$/);
        expect(segment === "." || segment === "..", file).toBe(false);
      }
    }
    const tmpEntries = (await readdir(tmp)).sort();
    expect(tmpEntries).toEqual(["files", "files.gen"]);

    // No two hostile ids collided: one file each, in both apps.
    expect((await listMemoryFiles(root, "app1")).length).toBe(hostileIds.length);
    expect((await listMemoryFiles(root, "../../evil-app")).length).toBe(hostileIds.length);
    expect((await readdir(root)).sort()).toEqual(["app1", safeSegment("../../evil-app")].sort());

    // The title cannot break out of its heading or its index line.
    const index = (await readMemoryIndex(root, "app1"))!;
    expect(index).not.toContain("\u202E");
    expect(index).not.toMatch(/^# injected/m);
    expect(index).toContain("evil\\](../../x) # injected \\<script\\>");
    for (const file of await listMemoryFiles(root, "app1")) {
      const { meta, text } = await frontMatterOf(file);
      expect(meta.status).toBe("active"); // the forged front matter in the body did not take over
      expect(meta.tags).toEqual(["../../tag", "a\nb: c"]);
      expect(text).not.toMatch(/^# injected/m);
    }
  });

  it("sanitised names are stable, token ids are kept as they are", () => {
    expect(safeSegment("mem-1_A")).toBe("mem-1_A");
    expect(safeSegment("../x")).toBe(safeSegment("../x"));
    expect(safeSegment("../x")).not.toBe(safeSegment("__x"));
    expect(safeSegment("x".repeat(5000)).length).toBeLessThanOrEqual(77);
  });
});

describe("files projection: front matter without the YAML library", () => {
  it("writes exactly what the YAML library writes, or leaves it to the library", () => {
    const random = prng(99);
    const alphabet = "aZz09_./:@+- #e\"'!x\u00e9\n\t[]{},&*?|>%`~";
    const pieces = ["true", "False", "null", "NULL", "~", "1", "12", "-3", "+1", "0x1F", "0o17", "1e5", "1.5", ".5", "1.", ".inf", "NaN", "Yes", "2025-01-01T00:00:00.000Z", "agent:agent-a", "team:payments", "src/a b.ts", "a: b", "a #b", "a:", "x "];
    const randomString = () => {
      if (random() < 0.3) return pieces[Math.floor(random() * pieces.length)]!;
      let text = "";
      const length = 1 + Math.floor(random() * 8);
      const chars = random() < 0.7 ? "abz09_./:@+- e" : alphabet;
      for (let i = 0; i < length; i++) text += chars[Math.floor(random() * chars.length)];
      return text;
    };
    const randomValue = (): unknown => {
      const roll = random();
      if (roll < 0.1) return null;
      if (roll < 0.2) return Math.floor(random() * 1000) - 10;
      if (roll < 0.3) return Array.from({ length: Math.floor(random() * 3) }, () => (random() < 0.8 ? randomString() : Math.floor(random() * 9)));
      return randomString();
    };
    const options = { lineWidth: 0, minContentWidth: 0 } as const;
    let fast = 0;
    for (let i = 0; i < 20_000; i++) {
      const text = randomString();
      const library = stringifyYaml({ k: text }, options);
      if (isPlainYamlString(text)) expect(library, JSON.stringify(text)).toBe(`k: ${text}\n`);
      const map = { id: randomString(), version: randomValue(), tags: randomValue(), provenance: { proposedBy: randomValue(), at: randomValue() } };
      const ours = plainYaml(map);
      if (ours !== undefined) {
        fast++;
        expect(ours, JSON.stringify(map)).toBe(stringifyYaml(map, options));
      }
    }
    expect(fast).toBeGreaterThan(100);
  });
});

describe("files projection: generations", () => {
  it("openFresh builds out of sight; promote swaps readers atomically to it and deletes the old generation", async () => {
    const history = mixedHistory(20, 300, 11);
    const definition = filesProjection({ root });
    const live = await definition.openLive(APP);
    open.push(live);
    await applyAll(live, history.slice(0, 150));
    const liveHash = await treeHash(root);
    const oldGenerationDir = path.join(`${root}.gen`, "app1", "1");
    expect(await readlink(path.join(root, "app1"))).toBe(path.join("..", "files.gen", "app1", "1"));

    const fresh = await definition.openFresh(APP);
    open.push(fresh);
    expect(fresh.checkpoint).toEqual({ seq: 0, generation: "2" });
    await applyAll(fresh, history);
    // Readers still see generation 1, untouched by the rebuild.
    expect(await fresh.currentGeneration()).toBe("1");
    expect(await live.currentGeneration()).toBe("1");
    expect(await treeHash(root)).toBe(liveHash);

    await definition.promote(APP, fresh);
    expect((await lstat(path.join(root, "app1"))).isSymbolicLink()).toBe(true);
    expect(await readlink(path.join(root, "app1"))).toBe(path.join("..", "files.gen", "app1", "2"));
    expect(await live.currentGeneration()).toBe("2");
    await expect(stat(oldGenerationDir)).rejects.toMatchObject({ code: "ENOENT" });
    expect((await readdir(root)).sort()).toEqual(["app1"]); // no temporary link left behind

    // What readers see now is exactly an uninterrupted run over the whole history.
    const reference = path.join(tmp, "reference");
    await applyAll(await openLive({ root: reference }), history);
    expect(await treeHash(root)).toBe(await treeHash(reference));

    // The old live target may not write into (or resurrect) the deleted generation.
    await expect(live.apply(history.slice(150, 160))).rejects.toMatchObject({ code: "conflict" });
    await expect(live.commit(160)).rejects.toMatchObject({ code: "conflict" });
    await expect(stat(oldGenerationDir)).rejects.toMatchObject({ code: "ENOENT" });

    // Reopening live continues on the promoted generation from its checkpoint.
    const reopened = await openLive();
    expect(reopened.checkpoint).toEqual({ seq: 300, generation: "2" });
  });

  it("a promoted rebuild keeps its state in bundles; live targets continue from them, before and after a restart", async () => {
    const history = mixedHistory(25, 400, 5);
    const definition = filesProjection({ root });
    const fresh = await definition.openFresh(APP);
    open.push(fresh);
    // Two commits (a bounded rebuild): two bundles, the second overriding the first for memories in both.
    await applyAll(fresh, history.slice(0, 120));
    await applyAll(fresh, history.slice(120, 250));
    await definition.promote(APP, fresh);
    const stateDir = path.join(`${root}.gen`, "app1", "1", ".state");
    expect((await readdir(stateDir)).sort()).toEqual(["bundle-120.jsonl", "bundle-250.jsonl"]);

    // The live target folds the rest onto records read from the bundles, in two commits with a restart between.
    await applyAll(await openLive(), history.slice(250, 330));
    await applyAll(await openLive(), history.slice(330));
    const reference = path.join(tmp, "reference");
    await applyAll(await openLive({ root: reference }), history);
    expect(await treeHash(root)).toBe(await treeHash(reference));
    expect((await readdir(stateDir)).some((name) => name.endsWith(".json"))).toBe(true);
  });

  it("a fresh target spills the memories touched least recently: one still in play stays in memory and is written once", async () => {
    // "hot" gets a new version proposed and approved between every new memory; 12 others come one per batch.
    const events: ProjectedEvent[] = [valid(rawEvent(1, "hot", "memory.proposed", { version: 1, ...content("hot v1") }))];
    const batches: ProjectedEvent[][] = [events.slice()];
    let seq = 1;
    for (let i = 1; i <= 12; i++) {
      const batch = [
        valid(rawEvent(++seq, `m-${String(i).padStart(2, "0")}`, "memory.proposed", { version: 1, ...content(`memory ${i}`) })),
        valid(rawEvent(++seq, "hot", i % 2 === 1 ? "memory.approved" : "memory.proposed", i % 2 === 1 ? { version: Math.ceil(i / 2) } : { version: i / 2 + 1, ...content(`hot v${i / 2 + 1}`) })),
      ];
      batches.push(batch);
      events.push(...batch);
    }
    const definition = filesProjection({ root, spillRecords: 4 });
    const fresh = await definition.openFresh(APP);
    open.push(fresh);
    for (const batch of batches) await fresh.apply(batch);
    await fresh.commit(seq);
    await definition.promote(APP, fresh);

    // Every spill took the two coldest of four memories: the new ones, never "hot" (touched in every batch).
    const stateDir = path.join(`${root}.gen`, "app1", "1", ".state");
    const bundles = (await readdir(stateDir)).filter((name) => name.startsWith("bundle-")).sort((a, b) => parseInt(a.slice(7)) - parseInt(b.slice(7)));
    expect(bundles.length).toBeGreaterThan(2);
    const idsIn = async (name: string) => (await readFile(path.join(stateDir, name), "utf8")).trim().split("\n").map((line) => JSON.parse(line).state.id as string);
    const written = (await Promise.all(bundles.map(idsIn))).flat();
    expect(written.filter((id) => id === "hot")).toEqual(["hot"]);
    expect(await idsIn(bundles.at(-1)!)).toContain("hot");
    // Each memory's record was written exactly once, and what readers see is what an uninterrupted live run writes.
    expect(written.slice().sort()).toEqual([...new Set(written)].sort());
    expect(written).toHaveLength(13);
    const reference = path.join(tmp, "reference");
    await applyAll(await openLive({ root: reference }), events);
    expect(await treeHash(root)).toBe(await treeHash(reference));
    // A live target continues from those bundles.
    const live = await openLive();
    await applyAll(live, [valid(rawEvent(seq + 1, "hot", "memory.approved", { version: 7 }))]);
    await applyAll(await openLive({ root: reference }), [valid(rawEvent(seq + 1, "hot", "memory.approved", { version: 7 }))]);
    expect(await treeHash(root)).toBe(await treeHash(reference));
  });

  it("refuses to promote a target with uncommitted events", async () => {
    const definition = filesProjection({ root });
    open.push(await definition.openLive(APP));
    const fresh = await definition.openFresh(APP);
    open.push(fresh);
    await fresh.apply([valid(rawEvent(1, "mem-1", "memory.proposed", { version: 1, ...content("x") }))]);
    await expect(definition.promote(APP, fresh)).rejects.toMatchObject({ code: "invalid" });
    expect(await fresh.currentGeneration()).toBe("1");
  });
});

describe("files projection: throughput", () => {
  it("applies N synthetic events in batches of 1,000 and reports events per second", async () => {
    const total = Number(process.env.FILES_BENCH_EVENTS ?? 5_000);
    const batchSize = Number(process.env.FILES_BENCH_BATCH ?? 1000);
    const memories = Number(process.env.FILES_BENCH_MEMORIES ?? Math.max(10, Math.floor(total / 5)));
    const history = mixedHistory(memories, total, 3);
    const target = await openLive();
    const started = performance.now();
    for (let i = 0; i < history.length; i += batchSize) {
      const batch = history.slice(i, i + batchSize);
      await target.apply(batch);
      await target.commit(batch.at(-1)!.seq);
    }
    const seconds = (performance.now() - started) / 1000;
    const touched = new Set(history.filter((e) => e.event.type.startsWith("memory.")).map((e) => e.event.aggregateId));
    console.log(
      `files projection: ${history.length} events (${touched.size} memories, batches of ${batchSize}) in ${seconds.toFixed(2)} s = ` +
        `${Math.round(history.length / seconds)} events/s`,
    );
    expect(target.checkpoint.seq).toBe(history.length);
    expect((await listMemoryFiles(root, "app1")).length).toBe(touched.size);
  });
});
