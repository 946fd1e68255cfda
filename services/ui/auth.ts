import { randomBytes, timingSafeEqual } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import { getCookie, setCookie } from "hono/cookie";
import { invalid } from "../../schemas/errors.js";

/**
 * Who may use the review page. On a loopback address (the default) it is whoever runs programs on this
 * machine, as with the CLI; on any other address a token is required (`--token` or MEMLEDGER_UI_TOKEN),
 * and without one the page refuses to start. Every POST must also come from the page itself (CSRF): same
 * origin, and carrying the per-process form token every rendered form holds.
 */

export const LOOPBACK = new Set(["127.0.0.1", "::1"]);
export const TOKEN_COOKIE = "memledger_ui_token";
export const MIN_TOKEN_LENGTH = 16;

/** Refuses a bind the brief forbids: a non-loopback address without a token, or a token too short to guess-proof. */
export function checkBind(host: string, token: string | undefined): void {
  if (token !== undefined && token.length < MIN_TOKEN_LENGTH) {
    throw invalid(`the ui token must be at least ${MIN_TOKEN_LENGTH} characters (e.g. openssl rand -hex 24)`);
  }
  if (!LOOPBACK.has(host) && token === undefined) {
    throw invalid(`memledger ui refuses to listen on ${host} without a token: anyone who reaches it would act as the page's human; give --token (or MEMLEDGER_UI_TOKEN), or bind 127.0.0.1`);
  }
}

const sameSecret = (given: string | undefined, expected: string): boolean => {
  if (given === undefined) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
};

const bearer = (c: Context): string | undefined => {
  const header = c.req.header("authorization");
  return header?.toLowerCase().startsWith("bearer ") ? header.slice(7).trim() : undefined;
};

/**
 * With a token: a request carries it as `Authorization: Bearer`, the cookie, or once as `?token=` (then set
 * as an HttpOnly, SameSite=Strict cookie and the address is loaded again without it, so it leaves the
 * address bar and the history). Without a token (loopback only): the Host header must name a loopback
 * address, so a page elsewhere cannot reach this one through DNS rebinding.
 */
export function accessGuard(options: { token: string | undefined; port: () => number }): MiddlewareHandler {
  const loopbackHosts = () => new Set([`127.0.0.1:${options.port()}`, `localhost:${options.port()}`, `[::1]:${options.port()}`]);
  return async (c, next) => {
    const token = options.token;
    if (token === undefined) {
      if (!loopbackHosts().has(c.req.header("host") ?? "")) return c.text("memledger ui: this page answers only at its loopback address", 421);
      return next();
    }
    if (sameSecret(bearer(c), token) || sameSecret(getCookie(c, TOKEN_COOKIE), token)) return next();
    const url = new URL(c.req.url);
    if (c.req.method === "GET" && sameSecret(url.searchParams.get("token") ?? undefined, token)) {
      setCookie(c, TOKEN_COOKIE, token, { httpOnly: true, sameSite: "Strict", path: "/" });
      url.searchParams.delete("token");
      return c.redirect(`${url.pathname}${url.search}`, 303);
    }
    return c.text("memledger ui: a token is required (open the address with ?token=… once, or send Authorization: Bearer …)", 401);
  };
}

/** The per-process form token every form carries (a hidden `_csrf` field). */
export const newFormToken = (): string => randomBytes(24).toString("base64url");

/**
 * A POST must be the page's own: no cross-site fetch metadata, an Origin (when sent) equal to the page's,
 * and the form token. Checked before any command is sent.
 */
export async function checkPost(c: Context, formToken: string): Promise<string | null> {
  const site = c.req.header("sec-fetch-site");
  if (site !== undefined && site !== "same-origin" && site !== "none") return `cross-site request refused (Sec-Fetch-Site: ${site})`;
  const origin = c.req.header("origin");
  const host = c.req.header("host");
  if (origin !== undefined && origin !== "null" && host !== undefined) {
    let originHost: string;
    try {
      originHost = new URL(origin).host;
    } catch {
      return "unreadable Origin header";
    }
    if (originHost !== host) return `cross-origin request refused (Origin ${origin})`;
  } else if (origin === "null") return "opaque-origin request refused";
  const body = await c.req.parseBody({ all: true });
  const given = body._csrf;
  if (typeof given !== "string" || !sameSecret(given, formToken)) return "the form token is missing or stale: reload the page";
  return null;
}
