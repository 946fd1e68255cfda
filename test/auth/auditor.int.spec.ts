import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { HOSTILE_POLICY, startGovernedLedger, type GovernedLedger } from "../hostile/governed-ledger.js";
import { settle, violations } from "../hostile/generated-broker.js";
import { openTranscripts, readTranscript } from "../../services/transcripts.js";
import { EventStore } from "../../services/event-store.js";

/**
 * Issue 12 item 7 and an issue 11 gap, against a private nats-server running what `memledger auth
 * config` generated: the read-only `auditor` user runs every audit command (history, diff, blame, index,
 * export, verify, exposure, and search, hydrate and index as of a sequence, from the snapshots the service
 * wrote) and every write it tries (a snapshot too) is refused with nothing changed; an agent stores a
 * session transcript (`session end --transcript`) under auth, and may do nothing else to that bucket.
 */
describe("auditor identity and agents' transcripts under auth", () => {
  let ledger: GovernedLedger;
  let memoryId: string;
  let sessionId: string;
  let exportFile: string;

  const lines = (out: string) => out.trim().split("\n").filter(Boolean);
  const asAuditor = (argv: string[]) => ledger.broker.cli("auditor", [...argv, "--app", "app1"]);

  beforeAll(async () => {
    ledger = await startGovernedLedger(HOSTILE_POLICY, { label: "audit" });
    const alice = await ledger.clientAs("agent:alice");
    const rita = await ledger.clientAs("human:rita");
    const v1 = await alice.propose({ title: "Queue retries", body: "Retry 3 times.", paths: ["src/queue/retry.ts"] });
    memoryId = v1.memoryId;
    await rita.approve(memoryId);
    await alice.propose({ memoryId, title: "Queue retries", body: "Retry 5 times." });
    await rita.approve(memoryId);
    await ledger.project();
    ({ sessionId } = await alice.startSession({ task: "queues" }));
    await alice.hydrate({ task: "queue retries", sessionId });
    await ledger.service.flushExposure();
    exportFile = join(ledger.broker.dir, "ledger.jsonl");
  });

  afterAll(async () => {
    await ledger?.stop();
  });

  it("the auditor runs history, diff, blame, index, export, verify and exposure", async () => {
    const history = await asAuditor(["history", memoryId, "--json"]);
    expect(history.stderr).toBe("");
    expect(history.code).toBe(0);
    expect(JSON.parse(history.stdout).entries.map((e: { type: string }) => e.type)).toEqual(["memory.proposed", "memory.approved", "memory.proposed", "memory.approved"]);

    const diff = await asAuditor(["diff", memoryId, "1", "2"]);
    expect(diff.code).toBe(0);
    expect(diff.stdout).toContain("-Retry 3 times.");
    expect(diff.stdout).toContain("+Retry 5 times.");

    const blame = await asAuditor(["blame", "src/queue", "--json"]);
    expect(blame.code).toBe(0);
    expect(lines(blame.stdout).map((l) => JSON.parse(l).memoryId)).toEqual([memoryId]);

    const index = await asAuditor(["index"]);
    expect(index.code).toBe(0);
    expect(index.stdout).toContain("Queue retries");

    const exported = await asAuditor(["export", "--out", exportFile]);
    expect(exported.code).toBe(0);

    const verify = await asAuditor(["verify"]);
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/ok/);

    const exposure = await asAuditor(["exposure", memoryId, "--json"]);
    expect(exposure.code).toBe(0);
    const shown = JSON.parse(exposure.stdout) as { sessions: { sessionId: string; sessionAgent: string; versions: number[] }[] };
    expect(shown.sessions).toEqual([expect.objectContaining({ sessionId, sessionAgent: "alice", versions: [2] })]);
  });

  it("the auditor runs search, hydrate and index as of a sequence, from the service's snapshots, and cannot write one", async () => {
    // Sequence 2: v1 approved ("Retry 3 times"); v2 came later.
    const search = await asAuditor(["search", "queue retries", "--as-of-seq", "2", "--mode", "bm25", "--json"]);
    expect(search.stderr).toBe("");
    expect(search.code).toBe(0);
    expect(lines(search.stdout).map((l) => JSON.parse(l)).map((h: { memoryId: string; version: number }) => [h.memoryId, h.version])).toEqual([[memoryId, 1]]);
    const hydrate = await asAuditor(["hydrate", "--task", "queue retries", "--as-of-seq", "2"]);
    expect(hydrate.stderr).toBe("");
    expect(hydrate.code).toBe(0);
    expect(hydrate.stdout).toContain("Retry 3 times.");
    expect(hydrate.stdout).not.toContain("Retry 5 times.");
    // Another agent's pack shows its scratchpad: refused to an actor who may not read it, as live.
    const others = await asAuditor(["hydrate", "--agent", "alice", "--task", "queue retries", "--as-of-seq", "2"]);
    expect(others.code).not.toBe(0);
    expect(others.stderr).toMatch(/forbidden|may not read agent:alice/);
    const fromLog = await asAuditor(["search", "queue retries", "--as-of-seq", "2", "--mode", "bm25", "--no-snapshot", "--json"]);
    expect(fromLog.stdout).toBe(search.stdout);

    // Snapshots are written by the service user; the auditor reads them (and only reads them).
    const names = naming(ledger.prefix);
    const store = await EventStore.open(ledger.serviceNc, names);
    const { writeSnapshots } = await import("../../services/audit/snapshots.js");
    await writeSnapshots(store, "app1", { every: 2 });
    const index = await asAuditor(["index", "--as-of-seq", "4", "--json"]);
    expect(index.code).toBe(0);
    const shown = JSON.parse(index.stdout) as { markdown: string; from: Record<string, { snapshotSeq: number | null; snapshotProblem: string | null }> };
    expect(shown.from.app1).toMatchObject({ snapshotSeq: 4, snapshotProblem: null });
    expect(shown.markdown).toContain("Queue retries");
    const bucketStream = `OBJ_${names.asOfSnapshotsBucket()}`;
    const objects = (await (await jetstreamManager(ledger.serviceNc)).streams.info(bucketStream)).state.messages;
    // A new event past the newest snapshot: `snapshot --every 1` must write one, and may not.
    await (await ledger.clientAs("agent:alice")).propose({ title: "Dead letters", body: "Park them." });
    const refused = await asAuditor(["snapshot", "--every", "1"]);
    expect(refused.code, refused.stdout).not.toBe(0);
    expect((await (await jetstreamManager(ledger.serviceNc)).streams.info(bucketStream)).state.messages).toBe(objects);
  });

  it("every write the auditor tries is refused, and nothing changed", async () => {
    const before = await ledger.broker.streamCounts();
    const names = naming(ledger.prefix);
    const stream = names.appStream("app1");

    // A command: the broker refuses the auditor's publish on any command subject.
    const command = await asAuditor(["propose", "--title", "Sneaky", "--body", "x"]);
    expect(command.code).not.toBe(0);
    const approve = await asAuditor(["approve", memoryId]);
    expect(approve.code).not.toBe(0);

    const nc = await ledger.broker.connectAs("auditor");
    const seen = violations(nc);
    // A direct publish on a stream subject (plain and JetStream): refused by the broker.
    nc.publish(names.aggregate("app1", "memory", memoryId), new TextEncoder().encode("{}"));
    await settle(nc);
    expect(seen.some((v) => /publish/i.test(v.message))).toBe(true);
    await expect(nc.request(names.aggregate("app1", "memory", "forged"), new TextEncoder().encode("{}"), { timeout: 2000 })).rejects.toThrow();

    // Stream delete, purge, message delete, update, create: refused.
    const jsm = await jetstreamManager(nc);
    await expect(jsm.streams.delete(stream)).rejects.toThrow();
    await expect(jsm.streams.purge(stream)).rejects.toThrow();
    await expect(jsm.streams.deleteMessage(stream, 1)).rejects.toThrow();
    await expect(jsm.streams.update(stream, { description: "changed" })).rejects.toThrow();
    await expect(jsm.streams.add({ name: `${ledger.prefix}_app_evil`, subjects: [`${ledger.prefix}.app.evil.>`] })).rejects.toThrow();

    // Import into an empty app: refused (it would create the stream and append).
    const imported = await ledger.broker.cli("auditor", ["import", exportFile, "--app", "copy1"]);
    expect(imported.code).not.toBe(0);

    expect(await ledger.broker.streamCounts()).toEqual(before);
    const info = await (await jetstreamManager(ledger.serviceNc)).streams.info(stream);
    expect(info.config.description ?? "").not.toBe("changed");
    // Equal counts also say no stream was created (the import's copy1, the forged evil).
    expect(Object.keys(before)).not.toContain(names.appStream("copy1"));
    expect(Object.keys(before)).not.toContain(names.appStream("evil"));
  });

  it("an agent stores its session transcript under auth (session end --transcript), and can do nothing else to the bucket", async () => {
    const transcript = join(ledger.broker.dir, "transcript.jsonl");
    const text = '{"role":"user","content":"fix the queue"}\n';
    await writeFile(transcript, text);
    const bob = await ledger.clientAs("agent:bob");
    const { sessionId: bobSession } = await bob.startSession({ task: "transcripts" });
    const ended = await ledger.broker.cli("agent:bob", ["session", "end", bobSession, "--summary", "done", "--transcript", transcript, "--app", "app1"]);
    expect(ended.stderr).toBe("");
    expect(ended.code).toBe(0);
    const shown = await bob.showSession(bobSession);
    expect(shown.transcript).toMatchObject({ bytes: Buffer.byteLength(text) });
    const store = await openTranscripts(ledger.serviceNc, naming(ledger.prefix));
    expect(new TextDecoder().decode(await readTranscript(store, shown.transcript!))).toContain("fix the queue");

    // The grant is for storing: the bucket cannot be deleted or purged, and no other stream is reachable.
    const nc = await ledger.broker.connectAs("agent:bob");
    const jsm = await jetstreamManager(nc, { checkAPI: false });
    const bucketStream = `OBJ_${naming(ledger.prefix).transcriptsBucket()}`;
    const messages = (await (await jetstreamManager(ledger.serviceNc)).streams.info(bucketStream)).state.messages;
    await expect(jsm.streams.purge(bucketStream)).rejects.toThrow();
    await expect(jsm.streams.delete(bucketStream)).rejects.toThrow();
    await expect(jsm.streams.info(naming(ledger.prefix).appStream("app1"))).rejects.toThrow();
    expect((await (await jetstreamManager(ledger.serviceNc)).streams.info(bucketStream)).state.messages).toBe(messages);
  });
});
