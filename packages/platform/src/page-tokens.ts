// Opaque, signed page tokens for keyset pagination (a sort key and the id of the last row).
import { createHmac, timingSafeEqual } from "node:crypto";
import { Code, fail } from "./errors.ts";

/** Where a page ended: the sort key and id of its last row. */
export interface Cursor {
  key: string;
  id: string;
}

const VERSION = 1;
const ID_BYTES = 16;
const MAC_BYTES = 16;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

const invalid = () => fail(Code.InvalidArgument, "page_token: not a token issued for this request");

/**
 * Page tokens carry the cursor, signed together with the request they page (the method and its
 * filters), so a token we did not issue, or one issued for another query, is refused instead
 * of silently paging something else. Binary, so the longest (a 64-character name) stays within
 * the contract's 400 characters.
 */
export function createPageTokens(secret: string, owner: string) {
  // A key of its own per owner (e.g. "protomesh.user.v1"): a page token can never pass for
  // anything else signed with the mesh secret, nor for another service's token.
  const key = createHmac("sha256", secret).update(`${owner} page tokens`).digest();
  const mac = (scope: string, body: Buffer) =>
    createHmac("sha256", key).update(scope).update("\0").update(body).digest().subarray(0, MAC_BYTES);

  const tokens = {
    /** A token for the page after `cursor`, valid only for requests with the same scope. */
    issue(scope: string, cursor: Cursor): string {
      const body = Buffer.concat([
        Buffer.of(VERSION),
        Buffer.from(cursor.id.replaceAll("-", ""), "hex"),
        Buffer.from(cursor.key, "utf8"),
      ]);
      return Buffer.concat([body, mac(scope, body)]).toString("base64url");
    },

    /** The cursor of a request's page token; none for the first page (an empty token). */
    cursorOf(scope: string, token: string): Cursor | undefined {
      return token ? tokens.read(scope, token) : undefined;
    },

    /** The next page's token, or "" when there is no next page. */
    tokenFor(scope: string, next: Cursor | undefined): string {
      return next ? tokens.issue(scope, next) : "";
    },

    /** The cursor in a token; INVALID_ARGUMENT naming page_token for anything we did not issue. */
    read(scope: string, token: string): Cursor {
      if (!BASE64URL.test(token)) throw invalid();
      const raw = Buffer.from(token, "base64url");
      if (raw.length < 1 + ID_BYTES + MAC_BYTES) throw invalid();
      const body = raw.subarray(0, raw.length - MAC_BYTES);
      if (!timingSafeEqual(raw.subarray(body.length), mac(scope, body)) || body[0] !== VERSION) {
        throw invalid();
      }
      const hex = body.subarray(1, 1 + ID_BYTES).toString("hex");
      const id = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
      return { id, key: body.subarray(1 + ID_BYTES).toString("utf8") };
    },
  };
  return tokens;
}

export type PageTokens = ReturnType<typeof createPageTokens>;

/** One page of results; `next` is where the following page starts, if there is one. */
export interface Page<T> {
  items: T[];
  next: Cursor | undefined;
}

/** Splits off the extra row a store fetches to learn whether another page follows. */
export function toPage<R extends { id: string; sort_key: string }, T>(
  rows: R[],
  limit: number,
  map: (r: R) => T,
): Page<T> {
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return {
    items: items.map(map),
    next: rows.length > limit && last ? { key: last.sort_key, id: last.id } : undefined,
  };
}
