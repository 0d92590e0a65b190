// Tokens live no longer than the platform ever issues them for, and are not from the future:
// a mesh token valid for ten years (or an access token for a day) proves a leaked key or a
// forger, not a caller. email_verified is believed only when it is exactly true.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  type CallContext,
  Code,
  ConnectError,
  createAccessTokenVerifier,
  createLogger,
  createMeshCredentials,
  createServiceClient,
  MAX_ACCESS_TOKEN_TTL_MS,
  requireVerifiedEmail,
} from "@protomesh/platform";
import { accessTokenSigner, assertCode, within } from "@protomesh/testkit";
import { type JWTPayload, SignJWT } from "jose";
import { fake, serve, TEST_MESH_SECRET, testUser } from "./serve.ts";

const now = () => Math.floor(Date.now() / 1000);
const YEAR_S = 365 * 24 * 3600;

let server: Awaited<ReturnType<typeof serve>>;
before(async () => {
  server = await serve([
    fake(UserService, {
      async getRoles() {
        return { roles: ["user"] };
      },
    }),
  ]);
});
after(() => server?.stop());

/** A mesh token signed with the real secret, with the given times (seconds; undefined leaves it out). */
function meshToken(times: { iat?: number | undefined; exp?: number | undefined }) {
  const jwt = new SignJWT({})
    .setProtectedHeader({ alg: "HS256", typ: "mesh+jwt" })
    .setSubject("forger")
    .setAudience("protomesh-mesh");
  if (times.iat !== undefined) jwt.setIssuedAt(times.iat);
  if (times.exp !== undefined) jwt.setExpirationTime(times.exp);
  return jwt.sign(new TextEncoder().encode(TEST_MESH_SECRET));
}

/** Calls an INTERNAL method presenting this mesh token. */
async function callWith(token: Promise<string>) {
  const client = createServiceClient(UserService, server.address, { mesh: { token: () => token } });
  try {
    return await client.getRoles({ userId: randomUUID() });
  } finally {
    client.close();
  }
}

test("a mesh token that lives longer than the platform issues, or comes from the future, is UNAUTHENTICATED", async () => {
  const ok = await callWith(createMeshCredentials(TEST_MESH_SECRET, "user").token());
  assert.deepEqual(ok.roles, ["user"], "the platform's own token passes");
  assert.ok(await callWith(meshToken({ iat: now() + 20, exp: now() + 320 })), "a little clock skew passes");

  const refused = [
    ["valid for ten years", { iat: now(), exp: now() + 10 * YEAR_S }],
    ["valid for 301 s", { iat: now(), exp: now() + 301 }],
    ["no iat", { exp: now() + 300 }],
    ["issued in ten minutes", { iat: now() + 600, exp: now() + 900 }],
  ] as const;
  for (const [what, times] of refused) {
    const err = await assertCode(callWith(meshToken(times)), Code.Unauthenticated, what);
    assert.equal(err.rawMessage, "invalid mesh credentials");
  }
});

test("an access token that lives longer than MAX_ACCESS_TOKEN_TTL_MS, or comes from the future, is refused", async () => {
  const { jwk, sign } = await accessTokenSigner();
  const verifier = createAccessTokenVerifier({
    fetchJwks: async () => ({ keys: [jwk] }),
    issuer: "protomesh",
    audience: "protomesh",
  });
  const mint = (iat: number, exp: number) => sign({ iat, exp });
  const maxS = MAX_ACCESS_TOKEN_TTL_MS / 1000;
  assert.equal(maxS, 3600);
  assert.ok(
    await verifier.verify(await mint(now(), now() + maxS)),
    "the longest lifetime auth may issue passes",
  );

  for (const [what, iat, exp] of [
    ["valid for ten years", now(), now() + 10 * YEAR_S],
    ["one second too long", now() - 10, now() - 10 + maxS + 1],
    ["issued in ten minutes", now() + 600, now() + 900],
  ] as const) {
    const err = await verifier.verify(await mint(iat, exp)).then(
      () => assert.fail(`${what}: accepted`),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConnectError && err.code === Code.Unauthenticated, `${what}: ${String(err)}`);
  }
});

test("emailVerified is true only when the token's email_verified claim is exactly true", async () => {
  const { jwk, sign } = await accessTokenSigner();
  const verifier = createAccessTokenVerifier({
    fetchJwks: async () => ({ keys: [jwk] }),
    issuer: "protomesh",
    audience: "protomesh",
  });
  const verified = async (claims: JWTPayload) => (await verifier.verify(await sign(claims))).emailVerified;
  assert.equal(await verified({ email_verified: true }), true);
  assert.equal(await verified({ email_verified: "true" }), false);
  assert.equal(await verified({ email_verified: 1 }), false);
  assert.equal(await verified({}), false);
});

test("requireVerifiedEmail lets a verified user through and stops an unverified one with FAILED_PRECONDITION", () => {
  const ctx = (user: CallContext["user"]): CallContext => ({
    requestId: "r",
    user,
    service: undefined,
    userAgent: "",
    clientIp: "127.0.0.1",
    accessToken: undefined,
    deadline: undefined,
    signal: new AbortController().signal,
    log: createLogger("test", "silent"),
  });
  const ada = testUser("ada");
  assert.equal(requireVerifiedEmail(ctx(ada)), ada);
  assert.throws(
    () => requireVerifiedEmail(ctx(testUser("bob", { emailVerified: false }))),
    (err) =>
      err instanceof ConnectError &&
      err.code === Code.FailedPrecondition &&
      err.rawMessage === "verify your email address first",
  );
  assert.throws(
    () => requireVerifiedEmail(ctx(undefined)),
    (err) => err instanceof ConnectError && err.code === Code.Unauthenticated,
  );
});

test("a server stream ends with UNAUTHENTICATED when the access token that opened it expires", async (t) => {
  const streaming = await serve(
    [
      fake(NotifyService, {
        async *watchMyNotifications(_req, ctx) {
          yield { notification: { id: "first", kind: "test" } };
          // Waits for ever: only the platform can end it.
          await delay(3_600_000, undefined, { signal: ctx.signal });
        },
      }),
    ],
    {
      verify: async (token) => testUser(token, { expiresAt: new Date(Date.now() + 300) }),
    },
  );
  t.after(() => streaming.stop());
  const client = createServiceClient(NotifyService, streaming.address);
  t.after(() => client.close());
  const stream = client.watchMyNotifications({}, { accessToken: randomUUID() })[Symbol.asyncIterator]();
  assert.equal((await stream.next()).value?.notification?.id, "first");
  const err = await within(
    stream.next().then(
      () => assert.fail("the stream went on after its token expired"),
      (e: unknown) => e,
    ),
    5_000,
    "the stream's end",
  );
  assert.ok(err instanceof ConnectError && err.code === Code.Unauthenticated, String(err));
});
