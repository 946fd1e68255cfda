import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemledgerError } from "../../schemas/errors.js";
import { startLedger, type Ledger } from "../support/env.js";

/**
 * An internal failure's text never reaches the client: it gets `internal` with a correlation id, and the
 * operator's log has the failure under the same id.
 */
describe("internal errors stay in the operator's log", () => {
  let ledger: Ledger;
  const logged: { err: unknown; where: string }[] = [];

  beforeAll(async () => {
    ledger = await startLedger({ onError: (err, where) => logged.push({ err, where }) });
  });
  afterAll(async () => {
    await ledger?.cleanup();
  });

  it("replies internal with a correlation id only, and logs the failure under it", async () => {
    const store = ledger.service.store;
    const append = store.append.bind(store);
    // A fault inside the service (a bug's stack, a path on its disk): not the sender's business.
    store.append = async () => {
      throw new Error("EACCES: /srv/secret/ledger.db is not writable by uid 1001");
    };
    try {
      const err = await ledger.client("agent-a").propose({ title: "T", body: "B" }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MemledgerError);
      const failure = err as MemledgerError;
      expect(failure.code).toBe("internal");
      expect(failure.message).not.toMatch(/secret|EACCES|uid/);
      const correlationId = failure.details.correlationId as string;
      expect(correlationId).toMatch(/^[0-9a-f-]{36}$/);
      const entry = logged.find((l) => l.where.includes(correlationId));
      expect(entry && (entry.err as Error).message).toMatch(/EACCES/);
    } finally {
      store.append = append;
    }
  });
});
