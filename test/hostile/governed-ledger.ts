import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { expect } from "vitest";
import { ORG_APP } from "../../events/subjects.js";
import { filesProjection, treeHash } from "../../projections/files/index.js";
import { SearchIndex, retrieve } from "../../projections/search/index.js";
import { MemledgerError } from "../../schemas/errors.js";
import type { Policy } from "../../schemas/policy.js";
import { loadPolicy } from "../../services/auth/load.js";
import { MemoryClient } from "../../services/client.js";
import { CommandService } from "../../services/command-service.js";
import { rebuildProjection } from "../../services/projection-runner.js";
import { startGeneratedBroker, type GeneratedBroker } from "./generated-broker.js";

/**
 * A ledger under attack, for the issue-9 tests of the policy (reads, promote, org, apps, the guard race):
 * a private nats-server running the configuration `memledger auth config` generated from the policy
 * (test/hostile/generated-broker.ts), the command service as the service user enforcing the same policy,
 * and read models a test can compare before and after an attack: the files projection (tree hash of the
 * whole root) and search indexes (results of fixed queries), both brought to the log's end on demand.
 */
export interface GovernedLedger {
  broker: GeneratedBroker;
  prefix: string;
  policy: Policy;
  service: CommandService;
  serviceNc: NatsConnection;
  filesRoot: string;
  /** A client acting as `name` (`agent:bob`), logged in as that user of the generated configuration. */
  clientAs(name: string, app?: string): Promise<MemoryClient>;
  /** Brings the files projection and the search indexes of `apps` (and the org) up to their streams' ends. */
  project(apps?: readonly string[]): Promise<void>;
  /** Every stream's message count, the files tree hash, and what `queries` find (ids by app), after project(). */
  snapshot(queries?: readonly string[]): Promise<LedgerSnapshot>;
  stop(): Promise<void>;
}

export interface LedgerSnapshot {
  streams: Record<string, number>;
  files: string;
  search: Record<string, string[]>;
}

export async function startGovernedLedger(policyData: unknown, options: { label?: string; apps?: readonly string[] } = {}): Promise<GovernedLedger> {
  const broker = await startGeneratedBroker(policyData, options.label ?? "gov");
  const filesRoot = path.join(await mkdtemp(path.join(tmpdir(), "memledger-gov-files-")), "files");
  const policy = await loadPolicy(broker.policyFile);
  const indexes = new Map<string, SearchIndex>();
  const serviceNc = await broker.connectAs("memledger");
  const service = await CommandService.start(serviceNc, {
    prefix: broker.prefix,
    policy,
    hydration: { filesRoot, searchIndex: (app) => indexes.get(app) },
  });
  const defaultApps = options.apps ?? ["app1"];

  const streamExists = async (stream: string) => {
    const jsm = await jetstreamManager(serviceNc);
    return jsm.streams.info(stream).then(
      () => true,
      () => false,
    );
  };

  const ledger: GovernedLedger = {
    broker,
    prefix: broker.prefix,
    policy,
    service,
    serviceNc,
    filesRoot,
    async clientAs(name, app = defaultApps[0]!) {
      return new MemoryClient(await broker.connectAs(name), { app, as: name, prefix: broker.prefix });
    },
    async project(apps = defaultApps) {
      for (const app of [...apps, ORG_APP]) {
        const stream = service.names.appStream(app);
        if (!(await streamExists(stream))) continue;
        await rebuildProjection(service.store, filesProjection({ root: filesRoot }), { prefix: broker.prefix, app, stream });
        let index = indexes.get(app);
        if (!index) indexes.set(app, (index = new SearchIndex(app, "test")));
        const caughtUp = index;
        await service.store.replay(stream, { fromSeq: caughtUp.appliedSeq + 1 }, (batch) => caughtUp.apply(batch));
      }
    },
    async snapshot(queries = []) {
      await ledger.project();
      const search: Record<string, string[]> = {};
      for (const query of queries) {
        const all = [...indexes.values()];
        search[query] = all.length === 0 ? [] : (await retrieve(all, query, { k: 50, mode: "bm25" })).map((h) => `${h.app}/${h.memoryId}`);
      }
      const files = await treeHash(filesRoot).catch(() => "(no files)");
      return { streams: await broker.streamCounts(), files, search };
    },
    async stop() {
      await service.stop().catch(() => undefined);
      await broker.stop();
      await rm(path.dirname(filesRoot), { recursive: true, force: true });
    },
  };
  return ledger;
}

/** The error a refused request rejects with (fails the test when it resolves). */
export async function refusal(work: Promise<unknown>): Promise<MemledgerError> {
  const outcome = await work.then(
    (value) => ({ resolved: value }),
    (err: unknown) => ({ err }),
  );
  if ("resolved" in outcome) throw new Error(`expected a refusal, got ${JSON.stringify(outcome.resolved)}`);
  expect(outcome.err).toBeInstanceOf(MemledgerError);
  return outcome.err as MemledgerError;
}

/**
 * The policy most issue-9 tests run under: memledger.policy.example.json's roles (agents free in their own
 * scratchpad, proposing and promoting elsewhere; reviewers; the curator; admins), named actors for the
 * broker users, a user with a role that allows nothing, and one declared app.
 */
export const HOSTILE_POLICY = {
  version: 1,
  apps: ["app1"],
  roles: {
    agent: {
      allow: [
        { verbs: ["*"], scopes: ["agent:self"], autoApprove: true },
        { verbs: ["propose", "promote"], scopes: ["team:*", "app"] },
      ],
    },
    reviewer: { allow: [{ verbs: ["propose", "approve", "reject", "supersede", "rollback", "promote"], scopes: ["team:*", "app"] }] },
    curator: { allow: [{ verbs: ["*"], scopes: ["org"] }] },
    admin: {
      allow: [
        { verbs: ["*"], scopes: ["*"] },
        { verbs: ["approve", "reject", "supersede", "rollback"], scopes: ["org"] },
      ],
    },
    nothing: { description: "logged in, allowed nothing", allow: [] },
  },
  actors: {
    "agent:*": { roles: ["agent"] },
    "agent:alice": { roles: ["agent"] },
    "agent:bob": { roles: ["agent"] },
    "human:rita": { roles: ["reviewer"] },
    "service:curator": { roles: ["curator"] },
    "human:root": { roles: ["admin"] },
    "human:mallory": { roles: ["nothing"] },
  },
};

/**
 * Runs the CLI in process against the governed ledger, acting as `as` under its policy, and returns the
 * memory ids of its JSON lines in the order printed. The CLI reads the log itself, so it runs with the
 * service user's JetStream access; what it may show is the policy's business (the read filters under test).
 */
export async function cliMemoryIds(ledger: GovernedLedger, dataDir: string, as: string, argv: string[]): Promise<string[]> {
  const { PassThrough } = await import("node:stream");
  const { run } = await import("../../services/cli/program.js");
  const stdout = new PassThrough();
  let out = "";
  stdout.on("data", (c: Buffer) => (out += c.toString()));
  const env = {
    NATS_URL: ledger.broker.creds.users.memledger!.url,
    MEMLEDGER_PREFIX: ledger.prefix,
    MEMLEDGER_APP: "app1",
    MEMLEDGER_AGENT: as,
    MEMLEDGER_POLICY: ledger.broker.policyFile,
    MEMLEDGER_DATA: dataDir,
  };
  const code = await run(argv, { stdin: process.stdin, stdout, stderr: new PassThrough(), env } as never);
  expect(code).toBe(0);
  return out.trim().split("\n").filter(Boolean).map((line) => (JSON.parse(line) as { memoryId: string }).memoryId);
}
