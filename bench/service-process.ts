/**
 * A CommandService in its own process, so that the benchmark's client and the service do not share
 * one event loop (or one core). Started by bench/append.ts with child_process.fork:
 *
 *   node dist/bench/service-process.js <prefix>
 *
 * IPC: sends {type:"ready"} once subscribed; answers {type:"cpu"} with its CPU usage in microseconds;
 * on {type:"stop"} drains, closes and exits. It also exits when its parent goes away.
 */
import { CommandService } from "../services/command-service.js";
import { connectNats } from "../services/nats.js";

type ParentMessage = { type: "stop" } | { type: "cpu" };

async function main(): Promise<void> {
  const prefix = process.argv[2];
  if (!prefix || !process.send) throw new Error("usage: fork(service-process.js, [prefix]) with an IPC channel");
  const nc = await connectNats({ name: `bench-service-${prefix}` });
  let failures = 0;
  const service = await CommandService.start(nc, {
    prefix,
    onError: (err) => {
      if (failures++ < 5) console.error(`[service] ${(err as Error)?.message ?? err}`);
    },
  });
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await service.stop().catch(() => undefined);
    await nc.close().catch(() => undefined);
    process.exit(code);
  };
  process.on("message", (msg: ParentMessage) => {
    if (msg.type === "cpu") process.send?.({ type: "cpu", usage: process.cpuUsage(), failures });
    else if (msg.type === "stop") void stop(0);
  });
  process.on("disconnect", () => void stop(0));
  process.send({ type: "ready", pid: process.pid });
}

main().catch((err) => {
  console.error(`[service] ${(err as Error)?.stack ?? err}`);
  process.exit(1);
});
