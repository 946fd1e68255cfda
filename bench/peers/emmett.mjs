// The peer side of `npm run bench -- peers`: Emmett's PostgreSQL event store, run in its own process from
// its own package (bench/peers/package.json: its peer dependencies want commander 12 and uuid 10, which
// memledger's own dependencies do not allow). Plain JavaScript, so memledger's tsc never sees it.
//
// Driven over IPC by bench/peers.ts, one phase at a time, so the two sides' phases interleave in one run:
//   {cmd:"setup"} {cmd:"append"} {cmd:"rebuild"} {cmd:"close"}; each answered {ok, result} or {ok:false, error}.
// `node emmett.mjs --drop <admin url> <database>` drops the run's database (the parent's cleanup, always run).
//
// The workload (commands, decider, envelope, projection fold) and the measuring loop are memledger's own,
// imported from its build (dist/), so both sides do the same thing per operation.
import pg from "pg";
import { v7 as uuidv7 } from "uuid";
import { STREAM_DOES_NOT_EXIST } from "@event-driven-io/emmett";
import { getPostgreSQLEventStore, readMessagesBatch } from "@event-driven-io/emmett-postgresql";
import { dumbo } from "@event-driven-io/dumbo";
import { ActiveByKind, WriterScript, approveCommand, countsObject, envelope, memoryDecider, proposeCommand, sumTallies } from "../../dist/bench/peers/workload.js";
import { measure } from "../../dist/bench/util.js";

const databaseUrl = (adminUrl, db) => {
  const url = new URL(adminUrl);
  url.pathname = `/${db}`;
  return url.toString();
};

async function dropDatabase(adminUrl, db) {
  if (!/^memledger_peers_[a-z0-9_]+$/.test(db)) throw new Error(`refusing to drop ${db}: not a peers benchmark database`);
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

if (process.argv[2] === "--drop") {
  await dropDatabase(process.argv[3], process.argv[4]);
  process.exit(0);
}

/** A rebuild that has not read every appended event by then fails the benchmark. */
const REBUILD_LIMIT_MS = 300_000;

/** @type {{ url: string, pool: pg.Pool, store: ReturnType<typeof getPostgreSQLEventStore> } | undefined} */
let ctx;
const writers = [];
let appended = 0;

const handlers = {
  async setup({ adminUrl, db, poolSize, asyncCommit }) {
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    let server;
    try {
      await admin.query(`CREATE DATABASE ${db}`);
      server = (await admin.query("SHOW server_version")).rows[0].server_version;
    } finally {
      await admin.end();
    }
    const url = databaseUrl(adminUrl, db);
    // Our own pool, so its size is a choice the output states (pg's default is 10 connections).
    // asyncCommit: PostgreSQL acknowledges a commit before its WAL is flushed, as a single JetStream
    // server acknowledges an append before fsync (lazy fsync, its default): the same durability both sides.
    const pool = new pg.Pool({ connectionString: url, max: poolSize, ...(asyncCommit ? { options: "-c synchronous_commit=off" } : {}) });
    pool.on("error", (err) => fail(err));
    const store = getPostgreSQLEventStore(url, { connectionOptions: { pool } });
    await store.schema.migrate();
    ctx = { url, pool, store };
    const commit = (await pool.query("SHOW synchronous_commit")).rows[0].synchronous_commit;
    return { server, emmett: "0.42.0", poolSize, synchronousCommit: commit };
  },

  /**
   * One phase: `warmup` operations (not measured), then `n` measured, over `concurrency` writers. An
   * operation is one command decided by memledger's memory decider on the state the writer holds, and
   * one appendToStream with the expected stream version that state came from: no read before the append
   * (the writer knows its version from its last append, as memledger's CommandHandler knows it from its cache).
   */
  async append({ name, concurrency, warmup, n }) {
    const { store } = ctx;
    const scripts = Array.from({ length: concurrency }, () => new WriterScript());
    writers.push(...scripts);
    const op = async (w, i) => {
      const script = scripts[w];
      const actorId = `agent-${w}`;
      if (!script.pending) {
        const id = uuidv7();
        const command = proposeCommand(i);
        const state0 = memoryDecider.initialState();
        const event = envelope(uuidv7(), id, actorId, command, state0);
        const result = await store.appendToStream(`memory-${id}`, [{ type: event.type, data: event }], { expectedStreamVersion: STREAM_DOES_NOT_EXIST });
        script.pending = { kind: command.kind, state: { id, state: memoryDecider.evolve(state0, event), version: result.nextExpectedStreamVersion } };
      } else {
        const { id, state, version } = script.pending.state;
        const event = envelope(uuidv7(), id, actorId, approveCommand, state);
        await store.appendToStream(`memory-${id}`, [{ type: event.type, data: event }], { expectedStreamVersion: version });
        script.approvedOne(script.pending.kind);
        script.pending = null;
      }
      appended++;
    };
    await measure(`${name} warm-up`, concurrency, warmup, (w, i) => op(w, 1_000_000_000 + i));
    return await measure(name, concurrency, n, op);
  },

  /**
   * The projection rebuilt from the start, `rounds` times: readMessagesBatch (the query Emmett's
   * consumers run) over consecutive ranges of global position, `batchSize` positions each.
   *
   * Not Emmett's consumer, nor readMessagesBatch with `after` the last position read: in 0.42.0 (the
   * newest on this registry) both order a batch by transaction id, then position, and continue after
   * the last row's position. Positions are taken in insert order and transaction ids in begin order,
   * which disagree when appends run concurrently, so at each batch boundary rows are read twice and
   * others never: 24 repeated and 8 lost of 12,800 events appended by 64 writers, read in batches of
   * 1,000 (61 and 31 in batches of 100). A run of this benchmark failed on it (the consumer's counts
   * differed from the writers'). Emmett's later fix (emmett PR #336) checkpoints the transaction id with
   * the position. A closed range of positions has no such boundary: every row is read once (the
   * counts and the number of events read are checked against the writers' below).
   * Emmett shows only rows of transactions older than the oldest one open anywhere on the server
   * (pg_snapshot_xmin), so while another client holds a transaction open a read ends short: it is read
   * again from the start after 10 ms, and that wait is part of the peer's time.
   */
  async rebuild({ rounds, batchSize }) {
    const expected = sumTallies(writers);
    const width = BigInt(batchSize);
    const runs = [];
    for (let r = 0; r < rounds; r++) {
      const pool = dumbo({ connectionString: ctx.url });
      const t0 = performance.now();
      let fold;
      try {
        for (;;) {
          fold = new ActiveByKind();
          let highest = 0n;
          for (let from = 1n; ; from += width) {
            const batch = await readMessagesBatch(pool.execute, { from, to: from + width - 1n });
            for (const m of batch.messages) {
              if (m.metadata.globalPosition > highest) highest = m.metadata.globalPosition;
              fold.apply({ type: m.type, aggregateId: m.data.aggregateId, data: m.data.data });
            }
            // An empty range past every position seen: the end of what this read can see.
            if (batch.messages.length === 0 && from > highest) break;
          }
          if (fold.events >= appended) break;
          if (performance.now() - t0 > REBUILD_LIMIT_MS) throw new Error(`rebuild read ${fold.events} of ${appended} events in ${REBUILD_LIMIT_MS / 1000} s`);
          await new Promise((resolve) => setTimeout(resolve, 10)); // another client's transaction still open
        }
      } finally {
        await pool.close();
      }
      const seconds = (performance.now() - t0) / 1000;
      const got = countsObject(fold.counts);
      if (JSON.stringify(got) !== JSON.stringify(expected)) throw new Error(`rebuild: ${JSON.stringify(got)}, but the writers approved ${JSON.stringify(expected)}`);
      if (fold.events !== appended) throw new Error(`rebuild read ${fold.events} events; ${appended} were appended`);
      runs.push({ events: fold.events, seconds });
    }
    return { runs, counts: expected, appended };
  },

  async close({ adminUrl, db }) {
    if (ctx) {
      await ctx.store.close();
      await ctx.pool.end();
      ctx = undefined;
    }
    await dropDatabase(adminUrl, db);
    return {};
  },
};

function fail(err) {
  process.send?.({ ok: false, error: String(err?.stack ?? err) });
  process.exit(1);
}
process.on("uncaughtException", fail);
process.on("unhandledRejection", fail);

process.on("message", async (msg) => {
  try {
    const result = await handlers[msg.cmd](msg);
    process.send({ ok: true, cmd: msg.cmd, result }, (err) => err && fail(err));
    if (msg.cmd === "close") process.disconnect();
  } catch (err) {
    process.send({ ok: false, cmd: msg.cmd, error: String(err?.stack ?? err) });
  }
});
process.send({ ok: true, cmd: "ready" });
