// Runs the named projections of one app in a child process and dies (exit 17) right after the
// committed batch that crosses --exit-after events: a crash between commit and ack, the worst moment.
// Imports the built code (npm test builds first).
import { connectNats } from "../../dist/services/nats.js";
import { EventStore } from "../../dist/services/event-store.js";
import { naming } from "../../dist/events/subjects.js";
import { ProjectionRunner } from "../../dist/services/projection-runner.js";
import { openReadModels, readModelConfig } from "../../dist/services/read-models.js";

const [prefix, app, dataDir, redisUrl, exitAfter, untilSeq] = process.argv.slice(2);
const nc = await connectNats({ servers: process.env.NATS_URL });
const store = await EventStore.open(nc, naming(prefix));
const models = openReadModels(prefix, readModelConfig({}, { filesRoot: `${dataDir}/files`, searchDir: `${dataDir}/search`, redisUrl }));
const scope = { prefix, app, stream: store.names.appStream(app) };
const limit = Number(exitAfter);
const runners = models.definitions.map(
  (definition) =>
    new ProjectionRunner(store, definition, scope, {
      batchSize: 5,
      afterCommit: (seq) => {
        if (limit > 0 && seq >= limit) process.exit(17);
      },
    }),
);
for (const r of runners) await r.start();
const target = Number(untilSeq);
await Promise.all(runners.map((r) => r.waitFor(target, 60_000)));
for (const r of runners) await r.stop();
await models.close();
await nc.close();
process.exit(0);
