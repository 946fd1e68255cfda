import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { MemledgerError } from "../../schemas/errors.js";
import { EventStore } from "../../services/event-store.js";
import { connectNats, createJetStreamResource, isStoreCreateFailure } from "../../services/nats.js";
import { openTranscripts, putTranscript, readTranscript } from "../../services/transcripts.js";
import { uniquePrefix } from "../support/env.js";
import { until } from "../support/eventually.js";
import { startNatsServer, type NatsServer } from "../support/servers.js";

/**
 * CI once failed on "cannot open the transcripts object store ...: error creating store for stream": the
 * server could not set up the file store of a stream with a fresh name, and sends only that sentence
 * (its log has the cause). Here a server of our own fails that way for real: a plain file stands where
 * the stream's directory goes, so the store is "not a directory". Removed, the next try succeeds.
 */
describe("a stream whose file store the server cannot create", () => {
  let server: NatsServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;

  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connectNats({ servers: server.url });
    jsm = await jetstreamManager(nc);
  });
  afterAll(async () => {
    await nc?.close();
    await server?.stop();
  });

  /** A file where the server will make the stream's directory: its file store then fails to open. */
  const block = async (stream: string): Promise<string> => {
    const streams = join(server.storeDir, "jetstream", "$G", "streams");
    await mkdir(streams, { recursive: true });
    const path = join(streams, stream);
    await writeFile(path, "not a directory");
    return path;
  };
  const failuresLogged = async (stream: string): Promise<number> =>
    (await readFile(server.logFile, "utf8")).split("\n").filter((line) => line.includes(`Stream create failed for '$G > ${stream}'`)).length;
  const streamNames = async (): Promise<string[]> => {
    const names: string[] = [];
    for await (const name of jsm.streams.names()) names.push(name);
    return names;
  };

  it("is retried while it fails that way: the transcripts store opens once the disk lets it, and works", async () => {
    const names = naming(uniquePrefix("store"));
    const stream = `OBJ_${names.transcriptsBucket()}`;
    const blocker = await block(stream);
    const opening = openTranscripts(nc, names);
    // The first try failed for real (the server logged why) before the obstacle goes.
    await until("the server logged a failed try", async () => (await failuresLogged(stream)) >= 1, 5_000);
    await rm(blocker);
    const store = await opening;
    const ref = await putTranscript(store, new TextEncoder().encode("a transcript"));
    expect(new TextDecoder().decode(await readTranscript(store, ref))).toBe("a transcript");
  });

  it("an app stream is created the same way by the event store", async () => {
    const prefix = uniquePrefix("store");
    const stream = naming(prefix).appStream("shop");
    const blocker = await block(stream);
    const store = await EventStore.open(nc, naming(prefix));
    const creating = store.ensureAppStream("shop");
    await until("the server logged a failed try", async () => (await failuresLogged(stream)) >= 1, 5_000);
    await rm(blocker);
    await expect(creating).resolves.toBe(stream);
    expect(await streamNames()).toContain(stream);
  });

  it("once the tries are spent it is `unavailable`, says where the cause is, and leaves no stream", async () => {
    const names = naming(uniquePrefix("store"));
    const stream = `OBJ_${names.transcriptsBucket()}`;
    await block(stream);
    const err = await openTranscripts(nc, names).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MemledgerError);
    expect(err).toMatchObject({ code: "unavailable" });
    expect((err as Error).message).toContain("Stream create failed for");
    expect(isStoreCreateFailure(err)).toBe(true);
    // Six tries, each one a real failure on the server.
    expect(await failuresLogged(stream)).toBe(6);
    expect(await streamNames()).not.toContain(stream);
  });

  it("any other refusal is not tried again", async () => {
    const prefix = uniquePrefix("store");
    await jsm.streams.add({ name: `${prefix}_first`, subjects: [`${prefix}.x`] });
    let tries = 0;
    const err = await createJetStreamResource("an overlapping stream", () => {
      tries++;
      return jsm.streams.add({ name: `${prefix}_second`, subjects: [`${prefix}.x`] });
    }).catch((e: unknown) => e);
    expect(tries).toBe(1);
    expect(isStoreCreateFailure(err)).toBe(false);
    expect(await streamNames()).not.toContain(`${prefix}_second`);
  });
});
