import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Named by kind: *.unit.spec.ts (pure), *.int.spec.ts (real servers), *.e2e.spec.ts (CLI or up processes).
    include: ["test/**/*.spec.ts"],
    // Tests share one NATS server and one Redis; each isolates itself by a unique prefix,
    // so files may run in parallel, but two cores are all a machine has.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
