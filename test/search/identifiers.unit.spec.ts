import { describe, expect, test } from "vitest";
import { SearchIndex, searchMemories, tokenizeText } from "../../projections/search/index.js";
import { identifierTokens } from "../../projections/search/tokenizer.js";
import { EventLog, type ContentInput } from "./events.js";

/** The memories that name each identifier, among notes about the same subjects. */
const TARGETS: Record<string, ContentInput> = {
  StripeWebhookHandler: {
    title: "Verify signatures before parsing",
    body: "StripeWebhookHandler must verify the Stripe-Signature header before it parses the payload, or replayed events get through.",
  },
  "src/payments/webhook.ts": {
    title: "Where webhook retries are deduplicated",
    body: "Deduplication of retried payment webhooks lives in src/payments/webhook.ts; it keys on the event id.",
    paths: ["src/payments/webhook.ts"],
  },
  ERR_TOKEN_EXPIRED: {
    title: "Refresh on expiry",
    body: "When the API answers ERR_TOKEN_EXPIRED the client refreshes once and retries; other auth errors log out.",
  },
  useAuthStore: {
    title: "Auth state in the UI",
    body: "Components read the session through useAuthStore; never read the token from localStorage directly.",
  },
};

const subjects = ["stripe webhook", "payment webhook", "webhook handler", "auth token", "token expiry", "auth store", "session store", "payments module"];
const nearMisses = [
  "StripeCheckoutHandler", "StripeWebhookVerifier", "WebhookHandlerBase", "PaypalWebhookHandler", "stripeWebhookSecret",
  "src/payments/refund.ts", "src/payments/webhook.test.ts", "src/billing/webhook.ts", "src/payments/stripe.ts", "lib/webhook.ts",
  "ERR_TOKEN_INVALID", "ERR_SESSION_EXPIRED", "TOKEN_EXPIRED_AT", "ERR_TOKEN_MISSING", "ERR_AUTH_EXPIRED",
  "useAuth", "useSessionStore", "authStore", "useAuthStoreMock", "useUserStore",
];
const verbs = ["handles", "validates", "retries", "logs", "parses", "refreshes", "caches", "rejects"];
const objects = ["webhook events", "payment intents", "expired tokens", "auth state", "signature headers", "refund requests", "session cookies", "store updates"];

/** About 200 notes on the same topics, many naming a near-miss identifier, none naming a target. */
function distractors(): ContentInput[] {
  const notes: ContentInput[] = [];
  for (let i = 0; i < 200; i++) {
    const subject = subjects[i % subjects.length]!;
    const near = nearMisses[i % nearMisses.length]!;
    const verb = verbs[(i * 3) % verbs.length]!;
    const object = objects[(i * 5) % objects.length]!;
    notes.push({
      title: `Note on the ${subject} ${i}`,
      body:
        `The ${subject} code ${verb} ${object}. ${near} is involved: stripe webhook handler, auth store, ` +
        `token expired errors, payments webhook ts files and src paths all show up here (${i}).`,
      paths: i % 4 === 0 ? [near.includes("/") ? near : `src/payments/${near}.ts`] : [],
    });
  }
  return notes;
}

describe("exact identifiers", () => {
  const log = new EventLog();
  distractors().forEach((note, i) => log.write(`d${i}`, note));
  for (const [identifier, note] of Object.entries(TARGETS)) log.write(`target-${identifier.replace(/[^A-Za-z0-9]/g, "_")}`, note);
  const index = new SearchIndex(log.app, "test");
  index.apply(log.events);

  test.each(Object.keys(TARGETS))("a query for %s ranks the memory that names it first", (identifier) => {
    const hits = searchMemories(index, identifier, { k: 5 });
    expect(hits[0]?.memoryId).toBe(`target-${identifier.replace(/[^A-Za-z0-9]/g, "_")}`);
    expect(hits[0]?.snippet).toContain(identifier);
  });

  test("identifiers inside a sentence are found too", () => {
    const hits = searchMemories(index, "where is ERR_TOKEN_EXPIRED handled?", { k: 3 });
    expect(hits[0]?.memoryId).toBe("target-ERR_TOKEN_EXPIRED");
  });

  test("prose still reaches the words inside identifiers", () => {
    const hits = searchMemories(index, "auth store", { k: 300 }).map((h) => h.memoryId);
    expect(hits).toContain("target-useAuthStore");
  });

  test("a file name ranks first every memory naming a path that ends in it", () => {
    const namingIt = new Set(
      log.events.flatMap(({ event }) =>
        event.type === "memory.proposed" && /\/webhook\.ts\b/.test(event.data.body + event.data.paths.join(" ")) ? [event.aggregateId] : [],
      ),
    );
    expect(namingIt.has("target-src_payments_webhook_ts")).toBe(true);
    expect(namingIt.size).toBeGreaterThan(1); // src/billing/webhook.ts and lib/webhook.ts name it too
    const top = searchMemories(index, "webhook.ts", { k: namingIt.size }).map((hit) => hit.memoryId);
    expect(new Set(top)).toEqual(namingIt);
  });

  test("an identifier that no memory contains falls back to BM25 over its words", () => {
    const hits = searchMemories(index, "StripeRefundHandler", { k: 5 });
    expect(hits.length).toBeGreaterThan(0);
  });
});

describe("identifier-aware tokens", () => {
  test("camelCase, PascalCase, snake_case, paths and acronyms", () => {
    expect(tokenizeText("StripeWebhookHandler")).toEqual(["stripewebhookhandler", "stripe", "webhook", "handler"]);
    // Words are Porter stems ("use" → "us", "expired" → "expir"); the whole identifier is never stemmed.
    expect(tokenizeText("useAuthStore")).toEqual(expect.arrayContaining(["useauthstore", "us", "auth", "store"]));
    expect(tokenizeText("ERR_TOKEN_EXPIRED")).toEqual(expect.arrayContaining(["err_token_expired", "err", "token", "expir"]));
    expect(tokenizeText("HTTPServer")).toEqual(expect.arrayContaining(["httpserver", "http", "server"]));
    expect(tokenizeText("see src/payments/webhook.ts.")).toEqual(
      expect.arrayContaining(["see", "src/payments/webhook.ts", "webhook.ts", "src", "payment", "webhook", "ts"]),
    );
    expect(tokenizeText("src/useAuthStore.ts")).toEqual(expect.arrayContaining(["useauthstore.ts", "useauthstore", "auth"]));
  });

  test("stop words are dropped as words but kept inside identifiers; non-Latin letters are kept", () => {
    expect(tokenizeText("the cache and the queue")).toEqual(["cach", "queue"]);
    expect(tokenizeText("THE_END")).toEqual(expect.arrayContaining(["the_end", "the", "end"]));
    expect(tokenizeText("Кэш очищается ночью, café")).toEqual(["кэш", "очищается", "ночью", "cafe"]);
  });

  test("plain words are stemmed on both sides, so inflections meet; identifiers stay whole", () => {
    expect(tokenizeText("retried webhooks")).toEqual(tokenizeText("retrying the webhook"));
    expect(tokenizeText("StripeWebhookHandlers")).toEqual(["stripewebhookhandlers", "stripe", "webhook", "handler"]);
    expect(identifierTokens("StripeWebhookHandlers in src/payments/webhooks.ts")).toEqual(
      expect.arrayContaining(["stripewebhookhandlers", "src/payments/webhooks.ts"]),
    );
    expect(identifierTokens("StripeWebhookHandlers")).not.toContain("stripewebhookhandl");
    // Words with digits or other scripts are left alone.
    expect(tokenizeText("v2 ночами")).toEqual(["v2", "ночами"]);
  });
});
