import { PassThrough } from "node:stream";
import { describe, expect, test } from "vitest";
import type { ProjectionProgress } from "../../projections/projection.js";
import { conflict, invalid, unavailable } from "../../schemas/errors.js";
import { unusableState } from "../../projections/unusable.js";
import { needsOperator, startupProgress } from "../../services/cli/startup-progress.js";
import type { Io } from "../../services/cli/io.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What `memledger up` prints on stderr while projections open and catch up (issue 8, item 1). */
function capture(tty: boolean) {
  const stderr = new PassThrough();
  let text = "";
  stderr.setEncoding("utf8").on("data", (s: string) => (text += s));
  Object.assign(stderr, { isTTY: tty, columns: 100, cursorTo: () => true, clearLine: () => true, moveCursor: () => true });
  const io = { stdout: new PassThrough(), stderr, stdin: new PassThrough(), env: {} } as unknown as Io;
  return { io, text: () => text };
}

const at = (phase: ProjectionProgress["phase"], message: string, counts: { done?: number; total?: number } = {}): ProjectionProgress => ({
  projection: "files",
  app: "app1",
  stream: "t_app_app1",
  phase,
  message,
  ...counts,
});

describe("startup progress on stderr", () => {
  test("not a terminal: one plain line per step; a slow catch-up at most once per interval, then caught up", async () => {
    const out = capture(false);
    const progress = startupProgress(out.io, { everyMs: 200 });
    progress.update(at("loading", "loading state of generation 3"));
    progress.update(at("catching-up", "catching up 0/5000", { done: 0, total: 5000 }));
    progress.update(at("catching-up", "catching up 1000/5000", { done: 1000, total: 5000 }));
    await sleep(250);
    for (let done = 2000; done < 5000; done += 1000) progress.update(at("catching-up", `catching up ${done}/5000`, { done, total: 5000 }));
    progress.update(at("caught-up", "caught up to seq 5000 (5000 events in 1.2 s)", { done: 5000, total: 5000 }));
    progress.done();
    expect(out.text().split("\n").filter(Boolean)).toEqual([
      "memledger: files app1: loading state of generation 3",
      "memledger: files app1: catching up 2000/5000",
      "memledger: files app1: caught up to seq 5000 (5000 events in 1.2 s)",
    ]);
  });

  test("a quick catch-up and an up-to-date projection say nothing", () => {
    const out = capture(false);
    const progress = startupProgress(out.io, { everyMs: 60_000 });
    progress.update(at("catching-up", "catching up 0/3", { done: 0, total: 3 }));
    progress.update(at("caught-up", "caught up to seq 3 (3 events in 0.1 s)", { done: 3, total: 3 }));
    progress.update({ ...at("caught-up", "up to date at seq 7", { done: 7, total: 7 }), app: "org" });
    progress.done();
    expect(out.text()).toBe("");
  });

  test("a terminal: a slow catch-up is drawn as a bar, and the step lines still appear", async () => {
    const out = capture(true);
    const progress = startupProgress(out.io, { everyMs: 100 });
    progress.update(at("catching-up", "catching up 0/5000", { done: 0, total: 5000 }));
    await sleep(150);
    progress.update(at("catching-up", "catching up 2500/5000", { done: 2500, total: 5000 }));
    await sleep(250); // the bar redraws on its own timer
    expect(out.text()).toMatch(/files app1 \[.*\] 2500\/5000/);
    progress.update(at("caught-up", "caught up to seq 5000", { done: 5000, total: 5000 }));
    progress.update(at("set-aside", "search snapshot x is unusable; rebuilding from the log"));
    progress.done();
    expect(out.text()).toContain("memledger: files app1: caught up to seq 5000");
    expect(out.text()).toContain("memledger: files app1: search snapshot x is unusable; rebuilding from the log");
    expect(out.text()).not.toContain("catching up 2500/5000");
  });

  test("up stops at once only on projection errors that name a file and are not set aside", () => {
    const operator = unavailable("cannot read search snapshot /d/g.snapshot (EACCES): fix its permissions", { file: "/d/g.snapshot" });
    expect(needsOperator(operator, "projection search on t_app_app1")).toBe(true);
    expect(needsOperator(conflict("/d/files/app1 is not a link: move it away", { file: "/d/files/app1" }), "projection files on t_app_app1")).toBe(true);
    expect(needsOperator(unusableState("search snapshot /d/g", "/d/g", "cut short"), "projection search on t_app_app1")).toBe(false);
    expect(needsOperator(invalid("bad event"), "projection search on t_app_app1 at seq 4")).toBe(false);
    expect(needsOperator(new Error("EACCES"), "projection search on t_app_app1")).toBe(false);
    expect(needsOperator(operator, "stopping curator")).toBe(false);
  });
});
