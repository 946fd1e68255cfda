import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { accessGuard, checkBind, checkPost, MIN_TOKEN_LENGTH } from "../../services/ui/auth.js";
import { MemledgerError } from "../../schemas/errors.js";
import { parseItem } from "../../services/ui/ledger.js";
import { diffView, resultsView } from "../../services/ui/views/layout.js";

/** The review page's gatekeeping, without a server: hono's app.request runs the middleware in-process. */
describe("review page access", () => {
  const TOKEN = "x".repeat(MIN_TOKEN_LENGTH + 8);
  const PORT = 7420;

  const guarded = (token: string | undefined, formToken = "form-token-123") => {
    const app = new Hono();
    app.use("*", accessGuard({ token, port: () => PORT }));
    app.get("/queue", (c) => c.text("queue"));
    app.post("/act", async (c) => {
      const refused = await checkPost(c, formToken);
      return refused ? c.text(refused, 403) : c.text("done");
    });
    return app;
  };
  const form = (fields: Record<string, string>) => new URLSearchParams(fields);

  it("refuses a non-loopback bind without a token, and a short token anywhere", () => {
    for (const host of ["0.0.0.0", "192.168.1.5", "::", "localhost"]) {
      expect(() => checkBind(host, undefined)).toThrow(/refuses to listen .* without a token/);
    }
    expect(() => checkBind("127.0.0.1", "short")).toThrow(MemledgerError);
    expect(() => checkBind("0.0.0.0", "short")).toThrow(/at least 16 characters/);
    expect(() => checkBind("127.0.0.1", undefined)).not.toThrow();
    expect(() => checkBind("::1", undefined)).not.toThrow();
    expect(() => checkBind("0.0.0.0", TOKEN)).not.toThrow();
  });

  it("without a token, answers only requests addressed to its loopback host (no DNS rebinding)", async () => {
    const app = guarded(undefined);
    expect((await app.request("/queue", { headers: { Host: `127.0.0.1:${PORT}` } })).status).toBe(200);
    expect((await app.request("/queue", { headers: { Host: `localhost:${PORT}` } })).status).toBe(200);
    expect((await app.request("/queue", { headers: { Host: `evil.example:${PORT}` } })).status).toBe(421);
    expect((await app.request("/queue", { headers: { Host: `127.0.0.1:9999` } })).status).toBe(421);
  });

  it("with a token: bearer or cookie, or ?token= once (cookie set, address reloaded without it); nothing else", async () => {
    const app = guarded(TOKEN);
    expect((await app.request("/queue")).status).toBe(401);
    expect((await app.request("/queue", { headers: { Authorization: `Bearer ${TOKEN}x` } })).status).toBe(401);
    expect((await app.request("/queue", { headers: { Authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
    expect((await app.request("/queue", { headers: { Cookie: `memledger_ui_token=${TOKEN}` } })).status).toBe(200);
    const once = await app.request(`/queue?app=a&token=${TOKEN}`);
    expect(once.status).toBe(303);
    expect(once.headers.get("location")).toBe("/queue?app=a");
    expect(once.headers.get("set-cookie")).toMatch(/HttpOnly.*SameSite=Strict|SameSite=Strict.*HttpOnly/);
    // A token in the query of a POST is not accepted (only a GET sets the cookie).
    expect((await app.request(`/act?token=${TOKEN}`, { method: "POST", body: form({}) })).status).toBe(401);
  });

  it("a POST needs the form token, and no cross-site or foreign origin", async () => {
    const app = guarded(undefined);
    const host = { Host: `127.0.0.1:${PORT}` };
    const post = (headers: Record<string, string>, fields: Record<string, string>) => app.request("/act", { method: "POST", headers: { ...host, ...headers }, body: form(fields) });
    expect((await post({}, { _csrf: "form-token-123" })).status).toBe(200);
    expect((await post({ Origin: `http://127.0.0.1:${PORT}`, "Sec-Fetch-Site": "same-origin" }, { _csrf: "form-token-123" })).status).toBe(200);
    expect(await (await post({}, {})).text()).toMatch(/form token/);
    expect((await post({}, { _csrf: "form-token-124" })).status).toBe(403);
    expect((await post({ Origin: "http://evil.example" }, { _csrf: "form-token-123" })).status).toBe(403);
    expect((await post({ Origin: "null" }, { _csrf: "form-token-123" })).status).toBe(403);
    expect((await post({ "Sec-Fetch-Site": "cross-site" }, { _csrf: "form-token-123" })).status).toBe(403);
  });
});

describe("review page rendering", () => {
  it("escapes what agents wrote: results, refusals and diffs are text", async () => {
    const hostile = `<script>alert(1)</script><img src=x onerror=alert(2)>`;
    const results = String(await resultsView([
      { ok: true, label: hostile, detail: hostile },
      { ok: false, label: "approve", code: "forbidden", message: hostile },
    ]));
    expect(results).not.toContain("<script>");
    expect(results).not.toContain("<img");
    expect(results).toContain("&lt;script&gt;alert(1)&lt;/script&gt;");
    expect(results).toContain('role="alert"');
    const diff = String(await diffView(`--- a\n+++ b\n@@ -1 +1 @@\n-old\n+${hostile}`, hostile));
    expect(diff).not.toContain("<script>");
    expect(diff).toContain('<span class="add">+&lt;script&gt;');
    expect(diff).toContain('<span class="del">-old</span>');
  });

  it("reads a queue item as memoryId@version and refuses anything else", () => {
    expect(parseItem("abc-1@2")).toEqual({ memoryId: "abc-1", version: 2 });
    for (const bad of ["abc", "@1", "abc@0", "abc@x", "abc@1.5"]) expect(() => parseItem(bad)).toThrow(MemledgerError);
  });
});
