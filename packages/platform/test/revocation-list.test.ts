// The denylist every token verifier keeps: it refuses revoked sessions until their tokens
// expire, never forgets one that still matters, and refuses to judge before it has caught up.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { createAccessTokenVerifier, createRevocationList } from "../src/caller.ts";

const inMs = (ms: number) => new Date(Date.now() + ms);

test("a revoked session is refused until its tokens expire; others pass", () => {
  const list = createRevocationList();
  list.markCurrent();
  list.revoke("s1", inMs(60_000));
  list.revoke("gone", inMs(-1));
  assert.equal(list.isRevoked({ sessionId: "s1", expiresAt: inMs(30_000) }), true);
  assert.equal(list.isRevoked({ sessionId: "s2", expiresAt: inMs(30_000) }), false);
  assert.equal(list.isRevoked({ sessionId: "gone", expiresAt: inMs(30_000) }), false, "already expired");
  assert.equal(list.size, 1);
});

test("when full, the oldest entry goes, and every token it could cover is still refused", () => {
  const list = createRevocationList(3);
  for (const [sid, ms] of [
    ["a", 10_000],
    ["b", 20_000],
    ["c", 30_000],
    ["d", 40_000],
  ] as const) {
    list.revoke(sid, inMs(ms));
  }
  assert.ok(list.size <= 3);
  // "a" was forgotten: its tokens (expiring within 10 s) are still refused, as is any token
  // that expires as early; a token living longer, of a session never revoked, passes.
  assert.equal(list.isRevoked({ sessionId: "a", expiresAt: inMs(9_000) }), true);
  assert.equal(list.isRevoked({ sessionId: "x", expiresAt: inMs(9_000) }), true);
  assert.equal(list.isRevoked({ sessionId: "x", expiresAt: inMs(15_000) }), false);
  assert.equal(list.isRevoked({ sessionId: "d", expiresAt: inMs(15_000) }), true);
});

test("watchers hear of their session's revocation (open streams end)", () => {
  const list = createRevocationList();
  let heard = 0;
  const unwatch = list.watch("s1", () => heard++);
  list.revoke("s2", inMs(60_000));
  list.revoke("s1", inMs(60_000));
  unwatch();
  list.revoke("s1", inMs(90_000));
  assert.equal(heard, 1);
});

test("a verifier does not judge tokens before the list has caught up: it waits, then refuses to guess", async () => {
  const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
  const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "EdDSA", use: "sig" };
  const token = await new SignJWT({ sid: "s1", roles: ["user"] })
    .setProtectedHeader({ alg: "EdDSA", kid: "k1", typ: "at+jwt" })
    .setIssuer("protomesh")
    .setAudience("protomesh")
    .setSubject(randomUUID())
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime("15m")
    .sign(privateKey);
  const revoked = createRevocationList();
  const verifier = createAccessTokenVerifier({
    fetchJwks: async () => ({ keys: [jwk] }),
    issuer: "protomesh",
    audience: "protomesh",
    revoked,
    revocationWaitMs: 200,
  });
  const early = await verifier.verify(token).then(
    () => assert.fail("a token was judged before the revocations were known"),
    (err: unknown) => err,
  );
  assert.ok(early instanceof ConnectError && early.code === Code.Unavailable);

  const waiting = verifier.verify(token);
  revoked.revoke("s1", inMs(60_000));
  revoked.markCurrent();
  const refused = await waiting.then(
    () => assert.fail("a revoked session passed"),
    (err: unknown) => err,
  );
  assert.ok(refused instanceof ConnectError && refused.code === Code.Unauthenticated);
});
