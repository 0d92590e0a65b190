// The gateway's HTTP caching of side-effect-free reads served as Connect GET: PUBLIC reads are
// kept for GATEWAY_CACHE_TTL_MS and revalidated with ETag / If-None-Match; errors, USER reads and
// POSTs are never kept. Upstream calls are counted by the fake services behind the gateway.
import assert from "node:assert/strict";
import { once } from "node:events";
import { connect as http2Connect } from "node:http2";
import { after, before, describe, test } from "node:test";
import { waitUntil } from "@protomesh/testkit";
import { type FakeMesh, startFakeMesh } from "./fakes.ts";

const TTL_MS = 1_500;
const UA = { "user-agent": "cache-test" };

let mesh: FakeMesh;
before(async () => {
  mesh = await startFakeMesh({ GATEWAY_CACHE_TTL_MS: String(TTL_MS), RATE_LIMIT_IP_PER_MINUTE: "0" });
});
after(() => mesh?.stop());

/** A Connect GET of a method, with `message` as its JSON request. */
const getUrl = (base: string, procedure: string, message: object = {}) =>
  `${base}/${procedure}?connect=v1&encoding=json&message=${encodeURIComponent(JSON.stringify(message))}`;

const JWKS = "protomesh.auth.v1.AuthService/GetJwks";
const VALIDATE = "protomesh.auth.v1.AuthService/ValidateToken";
const GET_ME = "protomesh.user.v1.UserService/GetMe";

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers: { ...UA, ...headers } });
  return { status: res.status, headers: res.headers, body: await res.text() };
}

const calls = (method: string) => mesh.calls.get(method) ?? 0;

/** The gateway's protomesh_gateway_cache_total for one result (all gateways of this process). */
async function cacheCount(result: string) {
  const text = await (await fetch(`${mesh.url}/metrics`)).text();
  const line = text
    .split("\n")
    .find((l) => l.startsWith(`protomesh_gateway_cache_total{result="${result}"}`));
  return Number(line?.split(" ")[1] ?? 0);
}

/** A key the fake auth adds to its JWKS: a changed answer for GetJwks. */
const newKey = (kid: string) => ({
  kty: "OKP",
  crv: "Ed25519",
  x: "A".repeat(43),
  kid,
  alg: "EdDSA",
  use: "sig",
});

describe("PUBLIC reads over GET", () => {
  test("a repeated GET within the TTL is answered from the cache: one upstream call, ETag and public max-age", async () => {
    const url = getUrl(mesh.url, JWKS, {});
    const before = calls("GetJwks");
    const hits = await cacheCount("hit");
    const first = await get(url);
    assert.equal(first.status, 200);
    const etag = first.headers.get("etag") ?? "";
    assert.match(etag, /^"[\w-]{32}"$/, "a strong ETag");
    assert.equal(first.headers.get("cache-control"), `public, max-age=${Math.floor(TTL_MS / 1000)}`);
    assert.match(first.headers.get("vary") ?? "", /accept-encoding/);
    // Another client, signed in or not: a PUBLIC answer is the same for everyone.
    const second = await get(url, { authorization: `Bearer ${await mesh.tokenFor("someone")}` });
    assert.equal(second.status, 200);
    assert.equal(second.body, first.body);
    assert.equal(second.headers.get("etag"), etag);
    assert.equal(second.headers.get("content-type"), first.headers.get("content-type"));
    assert.ok(second.headers.get("age") !== null, "a kept answer says how old it is");
    assert.equal(calls("GetJwks") - before, 1, "the second GET never reached auth");
    assert.equal((await cacheCount("hit")) - hits, 1);
  });

  test("concurrent GETs of the same read share one upstream call", async () => {
    const g = await mesh.startGateway();
    const url = getUrl(g.url, JWKS, {});
    const before = calls("GetJwks");
    const answers = await Promise.all(Array.from({ length: 10 }, () => get(url)));
    assert.deepEqual(new Set(answers.map((a) => a.status)), new Set([200]));
    assert.equal(new Set(answers.map((a) => a.body)).size, 1);
    assert.equal(calls("GetJwks") - before, 1);
  });

  test("If-None-Match with the ETag gets 304 without a body and without calling the service", async () => {
    const url = getUrl(mesh.url, JWKS, {});
    const { headers } = await get(url);
    const etag = headers.get("etag") ?? "";
    const before = calls("GetJwks");
    const notModified = await cacheCount("not_modified");
    for (const tag of [etag, `W/${etag}`, `"other", ${etag}`]) {
      const again = await get(url, { "if-none-match": tag });
      assert.equal(again.status, 304, tag);
      assert.equal(again.body, "");
      assert.equal(again.headers.get("etag"), etag);
    }
    assert.equal(calls("GetJwks"), before, "no upstream call");
    assert.equal((await cacheCount("not_modified")) - notModified, 3);
    assert.equal((await get(url, { "if-none-match": '"other"' })).status, 200, "another tag gets the body");
  });

  test("once the TTL has passed the new answer is served, with a new ETag", async () => {
    const url = getUrl(mesh.url, JWKS, {});
    const old = await get(url);
    mesh.extraKeys.push(newKey("rotated-in"));
    const kept = await get(url);
    assert.equal(kept.body, old.body, "within the TTL the kept answer is served");
    const changed = await waitUntil(
      async () => {
        const r = await get(url, { "if-none-match": old.headers.get("etag") ?? "" });
        return r.status === 200 && r.body.includes("rotated-in") ? r : undefined;
      },
      TTL_MS * 4,
      "the new key set served",
    );
    assert.notEqual(changed.headers.get("etag"), old.headers.get("etag"));
  });

  test("errors are never kept and say no-store", async () => {
    const url = getUrl(mesh.url, VALIDATE, { accessToken: "not-a-token" });
    const before = calls("ValidateToken");
    for (let i = 0; i < 2; i++) {
      const r = await get(url);
      assert.equal(r.status, 401);
      assert.match(r.body, /unauthenticated/);
      assert.equal(r.headers.get("cache-control"), "no-store");
      assert.equal(r.headers.get("etag"), null);
    }
    assert.equal(calls("ValidateToken") - before, 2, "each GET asked auth");
    const ok = await get(getUrl(mesh.url, VALIDATE, { accessToken: "valid" }));
    assert.equal(ok.status, 200, "the same method's answers are kept when they succeed");
  });

  test("a gateway keeps at most GATEWAY_CACHE_MAX_ENTRIES answers, dropping the least recently used", async () => {
    const g = await mesh.startGateway({ GATEWAY_CACHE_MAX_ENTRIES: "1" });
    const a = getUrl(g.url, JWKS, {});
    const b = `${a}&x=1`;
    const before = calls("GetJwks");
    await get(a);
    await get(a);
    assert.equal(calls("GetJwks") - before, 1);
    await get(b);
    await get(a);
    assert.equal(calls("GetJwks") - before, 3, "b pushed a out");
  });

  test("with GATEWAY_CACHE_TTL_MS=0 nothing is kept: no-cache, and the ETag still revalidates", async () => {
    const g = await mesh.startGateway({ GATEWAY_CACHE_TTL_MS: "0" });
    const url = getUrl(g.url, JWKS, {});
    const before = calls("GetJwks");
    const first = await get(url);
    assert.equal(first.headers.get("cache-control"), "no-cache");
    const again = await get(url, { "if-none-match": first.headers.get("etag") ?? "" });
    assert.equal(again.status, 304);
    assert.equal(calls("GetJwks") - before, 2, "every GET asked auth");
  });
  test("over HTTP/2 too, with CORS headers of the request's own origin on a kept answer", async (t) => {
    const g = await mesh.startGateway({ CORS_ORIGINS: "https://shop.example" });
    const session = http2Connect(g.url);
    t.after(() => void session.close());
    const path = getUrl("", JWKS, {});
    const h2get = async (origin: string) => {
      const stream = session.request({ ":method": "GET", ":path": path, origin, ...UA });
      const [headers] = (await once(stream, "response")) as [Record<string, string | number>];
      let body = "";
      for await (const chunk of stream) body += String(chunk);
      return { headers, body };
    };
    const before = calls("GetJwks");
    const first = await h2get("https://shop.example");
    const second = await h2get("https://evil.example");
    assert.equal(first.headers[":status"], 200);
    assert.equal(second.headers[":status"], 200);
    assert.equal(second.body, first.body);
    assert.equal(calls("GetJwks") - before, 1, "kept across origins: the answer does not depend on them");
    assert.equal(first.headers["access-control-allow-origin"], "https://shop.example");
    assert.equal(second.headers["access-control-allow-origin"], undefined, "CORS is decided per request");
    assert.match(String(second.headers.vary), /origin/);
  });

  test("a kept answer still counts against the client's per-address rate limit", async () => {
    const g = await mesh.startGateway({ RATE_LIMIT_IP_PER_MINUTE: "3" });
    const url = getUrl(g.url, JWKS, {});
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await get(url)).status);
    assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
  });
  test("a compressed answer is kept apart from an uncompressed one (Accept-Encoding)", async () => {
    // Past Connect's 1 KiB threshold, so gzip applies.
    for (let i = 0; i < 20; i++) mesh.extraKeys.push(newKey(`bulk-${i}`));
    const g = await mesh.startGateway();
    const url = getUrl(g.url, JWKS, {});
    const gzip = await get(url, { "accept-encoding": "gzip" });
    const plain = await get(url, { "accept-encoding": "identity" });
    const gzipAgain = await get(url, { "accept-encoding": "gzip" });
    assert.equal(gzip.headers.get("content-encoding"), "gzip");
    assert.equal(
      plain.headers.get("content-encoding"),
      null,
      "never the gzip bytes to a client that did not ask",
    );
    assert.equal(gzipAgain.headers.get("content-encoding"), "gzip");
    assert.equal(plain.body, gzip.body, "the same answer once decoded");
    assert.notEqual(plain.headers.get("etag"), gzip.headers.get("etag"), "other bytes, another tag");
    assert.equal(gzipAgain.headers.get("etag"), gzip.headers.get("etag"));
  });
});

describe("what is never cached", () => {
  test("USER reads depend on the token: private, no-store, asked every time, 304 from the fresh answer", async () => {
    const url = getUrl(mesh.url, GET_ME);
    const [ann, bob] = [await mesh.tokenFor("ann"), await mesh.tokenFor("bob")];
    const before = calls("GetMe");
    const mine = await get(url, { authorization: `Bearer ${ann}` });
    assert.equal(mine.status, 200);
    assert.match(mine.body, /"id":"ann"/);
    assert.equal(mine.headers.get("cache-control"), "private, no-store");
    const theirs = await get(url, { authorization: `Bearer ${bob}` });
    assert.match(theirs.body, /"id":"bob"/, "never another user's answer");
    const again = await get(url, {
      authorization: `Bearer ${ann}`,
      "if-none-match": mine.headers.get("etag") ?? "",
    });
    assert.equal(again.status, 304);
    assert.equal(calls("GetMe") - before, 3, "every GET asked user");
    assert.equal((await get(url)).status, 401, "and without a token, no answer at all");
  });

  test("POST is never cached", async () => {
    const before = calls("GetJwks");
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${mesh.url}/${JWKS}`, {
        method: "POST",
        headers: { ...UA, "content-type": "application/json" },
        body: "{}",
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("etag"), null);
      await res.text();
    }
    assert.equal(calls("GetJwks") - before, 2);
  });
});
