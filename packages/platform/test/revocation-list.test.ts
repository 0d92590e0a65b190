// The denylist every token verifier keeps: it refuses revoked sessions until their tokens
// expire, never forgets one that still matters, and refuses to judge before it has caught up.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { accessTokenSigner } from "@protomesh/testkit";
import { createAccessTokenVerifier, createRevocationList } from "../src/caller.ts";

const inMs = (ms: number) => new Date(Date.now() + ms);
/** A token of the session, issued `agoMs` ago and living 15 minutes from then. */
const token = (sessionId: string, agoMs = 1_000) => ({
  sessionId,
  issuedAt: inMs(-agoMs),
  expiresAt: inMs(15 * 60_000 - agoMs),
});

test("a revoked session is refused until its tokens expire; others pass", () => {
  const list = createRevocationList();
  list.markCurrent();
  list.revoke("s1", inMs(60_000));
  list.revoke("gone", inMs(-1));
  assert.equal(list.isRevoked(token("s1")), true);
  assert.equal(list.isRevoked(token("s2")), false);
  assert.equal(list.isRevoked(token("gone")), false, "its entry had expired");
  assert.equal(list.size, 1);
});

test("when full, the oldest entry goes, and every token issued before its revocation is refused until they expire", () => {
  const list = createRevocationList(3);
  for (const sid of ["a", "b", "c", "d"]) list.revoke(sid, inMs(3_600_000), inMs(-500));
  assert.ok(list.size <= 3);
  // "a" was forgotten: its tokens, and any other token issued before its revocation, are
  // refused; a token issued afterwards (a refreshed one) passes, also for a long-lived session.
  assert.equal(list.isRevoked(token("a")), true);
  assert.equal(list.isRevoked(token("x")), true, "issued before the forgotten revocation");
  assert.equal(list.isRevoked(token("x", 0)), false, "a fresh token passes");
  assert.equal(list.isRevoked(token("d", 0)), true, "a session still listed stays refused");
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
  const { jwk, sign } = await accessTokenSigner();
  const token = await sign({ sid: "s1" });
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

test("keys: loadKeys retries until auth answers, or until stopped; a check that failed is not remembered; every caller of a shared check is judged for revocation", async (t) => {
  const stopLoading = new AbortController();
  t.after(() => stopLoading.abort());
  const { jwk, sign } = await accessTokenSigner();
  const token = await sign({ sid: "s2" });
  let authUp = false;
  let fetches = 0;
  let retried = () => {};
  const revoked = createRevocationList();
  revoked.markCurrent();
  const verifier = createAccessTokenVerifier({
    fetchJwks: async () => {
      if (++fetches === 3) retried();
      if (!authUp) throw new Error("connection refused");
      return { keys: [jwk] };
    },
    issuer: "protomesh",
    audience: "protomesh",
    revoked,
  });
  const codes = (calls: Promise<unknown>[]) =>
    Promise.all(
      calls.map((c) =>
        c.then(
          () => "ok",
          (err: unknown) => (err as ConnectError).code,
        ),
      ),
    );

  // Auth down: a check fails (the one fetch it joined failed), and so does the loader's first try.
  assert.deepEqual(await codes([verifier.verify(token), verifier.verify(token)]), [
    Code.Unavailable,
    Code.Unavailable,
  ]);
  const loading = verifier.loadKeys(stopLoading.signal);
  await new Promise<void>((resolve) => {
    retried = resolve;
  });
  assert.equal(verifier.hasKeys(), false);
  authUp = true;
  await loading;
  assert.equal(verifier.hasKeys(), true, "the loader kept trying until auth answered");
  // The failed check is gone: the next one passes, for all who asked.
  const many = Array.from({ length: 20 }, () => verifier.verify(token));
  assert.deepEqual(new Set(await codes(many)), new Set(["ok"]));
  // A loader stopped while it waits to retry, before auth ever answers, gives up.
  let failedOnce = () => {};
  const firstFailure = new Promise<void>((resolve) => {
    failedOnce = resolve;
  });
  const never = createAccessTokenVerifier({
    fetchJwks: async () => {
      failedOnce();
      throw new Error("connection refused");
    },
    issuer: "protomesh",
    audience: "protomesh",
  });
  const stopped = new AbortController();
  const giving = never.loadKeys(stopped.signal);
  await firstFailure;
  stopped.abort();
  await giving;
  assert.equal(never.hasKeys(), false);
  // Calls that join one check of a token not seen before still ask the revocation list, each.
  const fresh = await sign({ sid: "s3" });
  const joined = [verifier.verify(fresh), verifier.verify(fresh)];
  revoked.revoke("s3", inMs(60_000));
  assert.deepEqual(await codes(joined), [Code.Unauthenticated, Code.Unauthenticated]);
});
