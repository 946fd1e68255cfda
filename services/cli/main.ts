#!/usr/bin/env node
import { processIo } from "./io.js";
import { run } from "./program.js";

// `memledger log | head` closes the pipe early: that is the reader's choice, not a failure worth a stack trace.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

// The exit status is set, not forced, so that buffered stdout reaches a pipe before the process ends.
process.exitCode = await run(process.argv.slice(2), processIo());
