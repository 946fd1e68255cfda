#!/usr/bin/env node
import { processIo } from "./io.js";
import { run } from "./program.js";

// The exit status is set, not forced, so that buffered stdout reaches a pipe before the process ends.
process.exitCode = await run(process.argv.slice(2), processIo());
