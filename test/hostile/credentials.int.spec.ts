import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import bcrypt from "bcryptjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BCRYPT_COST, writeAuthConfig, type CredentialsFile } from "../../services/auth/broker-config.js";
import { connectNats } from "../../services/nats.js";
import { startGeneratedBroker, type GeneratedBroker } from "./generated-broker.js";

/**
 * Issue 9 item 10: the generated nats-server configuration holds bcrypt hashes, never a password, and
 * the real server (2.9.10) logs users in against them; the credentials file (the only place with the
 * passwords) is mode 0600, also when a file with a wider mode was there before.
 */

const POLICY = {
  version: 1,
  roles: { agent: { allow: [{ verbs: ["propose"], scopes: ["app"] }] }, admin: { allow: [{ verbs: ["*"], scopes: ["*"] }] } },
  actors: { "agent:coder-1": { roles: ["agent"] }, "human:ops": { roles: ["admin"] } },
};

const modeOf = async (file: string) => (await stat(file)).mode & 0o777;

describe("passwords in the generated broker configuration", () => {
  let broker: GeneratedBroker;
  let conf: string;

  beforeAll(async () => {
    broker = await startGeneratedBroker(POLICY, "creds");
    conf = await readFile(broker.configFile, "utf8");
  }, 60_000);

  afterAll(async () => {
    await broker?.stop();
  });

  it("the config holds a bcrypt hash per user and no password; the hashes match the credentials file", async () => {
    const users = Object.values(broker.creds.users);
    expect(users.map((u) => u.user).sort()).toEqual(["agent.coder-1", "auditor", "human.ops", "memledger"]);
    const hashes = [...conf.matchAll(/password: "([^"]+)"/g)].map((m) => m[1]!);
    expect(hashes).toHaveLength(users.length);
    for (const hash of hashes) expect(hash).toMatch(new RegExp(`^\\$2[ab]\\$${String(BCRYPT_COST).padStart(2, "0")}\\$[./A-Za-z0-9]{53}$`));
    const hashOf = new Map([...conf.matchAll(/user: "([^"]+)"\n\s+password: "([^"]+)"/g)].map((m) => [m[1]!, m[2]!]));
    for (const u of users) {
      expect(u.password.length).toBeGreaterThanOrEqual(32);
      expect(conf).not.toContain(u.password);
      expect(conf).not.toContain(encodeURIComponent(u.password));
      expect(bcrypt.compareSync(u.password, hashOf.get(u.user)!)).toBe(true);
    }
    expect(await modeOf(broker.configFile)).toBe(0o600);
  });

  it("nats-server 2.9.10 logs each user in against its hash, refuses wrong passwords and the hash itself, and sees no plaintext password", async () => {
    for (const name of Object.keys(broker.creds.users)) {
      const nc = await broker.connectAs(name);
      expect(nc.info?.version).toBe("2.9.10");
      await nc.close();
    }
    const ops = broker.creds.users["human:ops"]!;
    const hashOfOps = conf.match(/user: "human\.ops"\n\s+password: "([^"]+)"/)![1]!;
    for (const pass of ["not-the-password", hashOfOps, broker.creds.users["agent:coder-1"]!.password]) {
      await expect(connectNats({ servers: broker.server.url, user: ops.user, pass, reconnect: false, timeoutMs: 3_000 })).rejects.toMatchObject({
        code: "unavailable",
        message: expect.stringMatching(/Authorization Violation/i),
      });
    }
    // The server warns when a configuration has plain passwords; this one has none.
    const log = await readFile(join(broker.server.configFile, "..", "server.log"), "utf8");
    expect(log).toContain("Server is ready");
    expect(log).not.toMatch(/plaintext password/i);
  });

  it("the credentials file is 0600 when written, and becomes 0600 again (passwords kept, a warning given) when it was wider", async () => {
    const dir = await mkdtemp(join(tmpdir(), "memledger-creds-"));
    try {
      const policyFile = join(dir, "policy.json");
      await writeFile(policyFile, JSON.stringify(POLICY));
      const out = join(dir, "nats.conf");
      // The CLI, with a lower cost for the test's sake (what it prints is the summary, no secret).
      const printed = await broker.cli("human:ops", ["auth", "config", "--policy", policyFile, "--out", out, "--port", "4999", "--bcrypt-cost", "4", "--json"]);
      expect({ code: printed.code, stderr: printed.stderr }).toEqual({ code: 0, stderr: "" });
      const first = JSON.parse(printed.stdout) as Awaited<ReturnType<typeof writeAuthConfig>>;
      expect(first.warnings).toEqual([]);
      expect(await readFile(first.config, "utf8")).toMatch(/password: "\$2[ab]\$04\$/);
      expect(await modeOf(first.credentials)).toBe(0o600);
      expect(await modeOf(first.config)).toBe(0o600);
      const before = JSON.parse(await readFile(first.credentials, "utf8")) as CredentialsFile;
      // The printed summary carries no secret.
      for (const u of Object.values(before.users)) expect(printed.stdout).not.toContain(u.password);

      // Someone widened both files; the next run narrows them and keeps the passwords (nobody is locked out).
      await chmod(first.credentials, 0o644);
      await chmod(first.config, 0o666);
      const second = await writeAuthConfig({ policyFile, out, prefix: "pfx", port: 4999, bcryptCost: 4 });
      expect(await modeOf(second.credentials)).toBe(0o600);
      expect(await modeOf(second.config)).toBe(0o600);
      const after = JSON.parse(await readFile(second.credentials, "utf8")) as CredentialsFile;
      expect(Object.fromEntries(Object.entries(after.users).map(([k, u]) => [k, u.password]))).toEqual(
        Object.fromEntries(Object.entries(before.users).map(([k, u]) => [k, u.password])),
      );
      expect(second.warnings).toEqual([expect.stringMatching(/nats\.credentials\.json was readable by others \(mode 0644\).*delete it and run this again/)]);

      // A world-readable file of someone else's making in its place: replaced, not written through.
      await rm(second.credentials);
      await writeFile(second.credentials, "{}", { mode: 0o666 });
      await chmod(second.credentials, 0o666);
      const third = await writeAuthConfig({ policyFile, out, prefix: "pfx", port: 4999, bcryptCost: 4 });
      expect(await modeOf(third.credentials)).toBe(0o600);
      const fresh = JSON.parse(await readFile(third.credentials, "utf8")) as CredentialsFile;
      expect(Object.keys(fresh.users).sort()).toEqual(["agent:coder-1", "auditor", "human:ops", "memledger"]);
      // No temporary file is left beside it.
      const { readdir } = await import("node:fs/promises");
      expect((await readdir(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
