const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `check` until it returns something other than undefined, and returns that; fails naming `what`
 * after `timeoutMs`. The one polling helper of the test suite: read models are eventually consistent.
 */
export async function eventually<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 45_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await sleep(everyMs);
  }
}

/**
 * Polls until `check` holds: it returns true, or returns anything but false without throwing (so a check
 * made of expect() assertions works as is). Fails naming `what`, with the last assertion's message.
 */
export async function until(what: string, check: () => unknown, timeoutMs = 45_000, everyMs = 50): Promise<void> {
  await eventually(what, async () => ((await check()) === false ? undefined : true), timeoutMs, everyMs);
}
