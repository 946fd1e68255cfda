import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "test/**/*.spec.ts"],
    // Tests share one NATS server and one Redis; each isolates itself by a unique prefix,
    // so files may run in parallel, but two cores are all a machine has.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
