// Access and refresh tokens end to end: rotation and theft detection, every way a forged or
// misused access token is refused (at the gateway and at a service called directly), INTERNAL
// methods, and the published key set.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  type CallOptions,
  createLogger,
  createMeshCredentials,
  createPool,
  createServiceClient,
  type Pool,
} from "@protomesh/platform";
import {
  assertCode,
  gatewayClient,
  type Mesh,
  signUpAndSignIn,
  startMesh,
  uniqueEmail,
} from "@protomesh/testkit";
import { base64url, decodeJwt, decodeProtectedHeader, generateKeyPair, type JWK, SignJWT } from "jose";
import { createKeyRing, open, seal } from "../src/key-ring.ts";
import { createPgAuthStore } from "../src/pg-auth-store.ts";

let mesh: Mesh;
let authPool: Pool | undefined;
const closers: Array<() => void> = [];
before(async () => {
  // No grace window here: a second use of a refresh token is theft at once (the window has
  // tests of its own in sessions.test.ts).
  mesh = await startMesh({ services: ["auth", "user"], env: { auth: { REFRESH_GRACE_S: "0" } } });
});
after(async () => {
  for (const close of closers) close();
  await authPool?.end();
  await mesh?.stop();
});

const auth = () => gatewayClient(AuthService, mesh.url, "connect-json");
const gatewayUsers = () => gatewayClient(UserService, mesh.url, "connect-json");
const directUsers = (options: Parameters<typeof createServiceClient>[2] = {}) => {
  const client = createServiceClient(UserService, mesh.addr("user"), options);
  closers.push(() => client.close());
  return client;
};

/** Signs up a fresh user and signs in once. */
async function signedIn(tag = "tokens") {
  const { userId, email, password, tokens } = await signUpAndSignIn(auth(), {
    email: uniqueEmail(tag),
    displayName: "Tess",
  });
  return { userId, email, password, accessToken: tokens.accessToken, refreshToken: tokens.refreshToken };
}

/**
 * Signs access tokens with auth's real current key, read through auth's own key ring, so that
 * claim checks (expiry, issuer, audience) are tested apart from the signature check.
 */
async function realKeySigner(overrides: { ttlS?: number; issuer?: string; audience?: string } = {}) {
  const log = createLogger("tokens-test", "silent");
  authPool ??= createPool(mesh.env.auth.DATABASE_URL ?? "", log, 2);
  const kek = Buffer.from(mesh.env.auth.AUTH_KEY_ENCRYPTION_KEY ?? "", "base64");
  return createKeyRing({
    store: createPgAuthStore(authPool, {
      refreshS: 3600,
      secrets: { seal: (p) => seal(kek, p), open: (s) => open(kek, s) },
    }),
    encryptionKey: kek,
    rotationS: 365 * 86400,
    accessTokenTtlS: overrides.ttlS ?? 900,
    issuer: overrides.issuer ?? "protomesh",
    audience: overrides.audience ?? "protomesh",
    log,
  });
}

const encodeSegment = (value: object) => base64url.encode(JSON.stringify(value));

async function fetchJwks(): Promise<{ keys: JWK[] }> {
  const res = await fetch(`${mesh.url}/.well-known/jwks.json`);
  assert.equal(res.status, 200);
  return (await res.json()) as { keys: JWK[] };
}

describe("refresh tokens", () => {
  test("a reused refresh token revokes its whole family", async () => {
    const { refreshToken: rt1 } = await signedIn();
    const rt2 = (await auth().refreshToken({ refreshToken: rt1 })).tokens?.refreshToken ?? "";
    const rt3 = (await auth().refreshToken({ refreshToken: rt2 })).tokens?.refreshToken ?? "";
    assert.ok(rt2 && rt3 && new Set([rt1, rt2, rt3]).size === 3, "every refresh hands out a new token");

    await assertCode(auth().refreshToken({ refreshToken: rt1 }), Code.Unauthenticated, "reused RT1");
    await assertCode(auth().refreshToken({ refreshToken: rt3 }), Code.Unauthenticated, "RT3 after reuse");
    await assertCode(auth().refreshToken({ refreshToken: rt2 }), Code.Unauthenticated, "RT2 after reuse");
  });

  test("the access token from a refresh works for GetMe and keeps the session", async () => {
    const first = await signedIn();
    const { tokens } = await auth().refreshToken({ refreshToken: first.refreshToken });
    assert.ok(tokens?.accessToken);
    const { user } = await gatewayUsers().getMe(
      {},
      { headers: { authorization: `Bearer ${tokens.accessToken}` } },
    );
    assert.equal(user?.id, first.userId);

    const original = await auth().validateToken({ accessToken: first.accessToken });
    const afterRefresh = await auth().validateToken({ accessToken: tokens.accessToken });
    assert.equal(afterRefresh.claims?.sessionId, original.claims?.sessionId);
    assert.notEqual(afterRefresh.claims?.tokenId, original.claims?.tokenId);
  });

  test("signing out makes the session's refresh token fail, and signing out twice is fine", async () => {
    const { refreshToken: rt1 } = await signedIn();
    const rt2 = (await auth().refreshToken({ refreshToken: rt1 })).tokens?.refreshToken ?? "";
    assert.ok(rt2);

    await auth().signOut({ refreshToken: rt2 });
    await assertCode(auth().refreshToken({ refreshToken: rt2 }), Code.Unauthenticated, "after sign-out");
    await auth().signOut({ refreshToken: rt2 });
    await auth().signOut({ refreshToken: "never-issued-token" });
  });

  test("signing out one session leaves the user's other sessions alone", async () => {
    const first = await signedIn();
    const { result } = await auth().signIn({ email: first.email, password: first.password });
    assert.equal(result.case, "tokens");
    const tokens = result.value;

    await auth().signOut({ refreshToken: first.refreshToken });
    const other = await auth().refreshToken({ refreshToken: tokens.refreshToken });
    assert.ok(other.tokens?.refreshToken);
  });
});

describe("access tokens", () => {
  test("ValidateToken returns the claims of a token auth issued", async () => {
    const { userId, accessToken } = await signedIn();
    const { claims } = await auth().validateToken({ accessToken });
    assert.ok(claims?.issueTime && claims.expireTime);
    assert.equal(claims.userId, userId);
    assert.match(claims.sessionId, /^[0-9a-f-]{36}$/);
    assert.deepEqual(claims.roles, ["user"]);
    assert.equal(claims.issuer, "protomesh");
    assert.equal(claims.audience, "protomesh");
    assert.ok(claims.tokenId);
    const lifetime = Number(claims.expireTime.seconds - claims.issueTime.seconds);
    assert.ok(Math.abs(lifetime - 900) <= 1, `lives 15 minutes, not ${lifetime} s`);

    const header = decodeProtectedHeader(accessToken);
    assert.equal(header.alg, "EdDSA");
    assert.equal(header.typ, "at+jwt");
  });

  test("a valid access token is accepted at the gateway and at the user service", async () => {
    const { userId, accessToken } = await signedIn();
    const viaGateway = await gatewayUsers().getMe(
      {},
      { headers: { authorization: `Bearer ${accessToken}` } },
    );
    assert.equal(viaGateway.user?.id, userId);
    const direct = await directUsers().getMe({}, { accessToken });
    assert.equal(direct.user?.id, userId);

    // The control for the real-key cases below: the same signer with honest settings passes.
    const { sid } = decodeJwt(accessToken);
    const { token } = await (await realKeySigner()).sign({
      userId,
      sessionId: String(sid),
      email: "",
      roles: ["user"],
      emailVerified: false,
    });
    assert.equal((await directUsers().getMe({}, { accessToken: token })).user?.id, userId);
  });

  /** Each case makes the `authorization` header value to send (undefined: none at all). */
  const refused: Array<[string, () => Promise<string | undefined>]> = [
    ["no token", async () => undefined],
    ["a Basic authorization header", async () => `Basic ${Buffer.from("tess:secret").toString("base64")}`],
    ["a refresh token used as an access token", async () => `Bearer ${(await signedIn()).refreshToken}`],
    [
      "an expired token signed with the real key",
      async () => bearerFor(await realKeySigner({ ttlS: -120 }), await signedIn()),
    ],
    [
      "a token for another audience signed with the real key",
      async () => bearerFor(await realKeySigner({ audience: "someone-else" }), await signedIn()),
    ],
    [
      "a token from another issuer signed with the real key",
      async () => bearerFor(await realKeySigner({ issuer: "evil" }), await signedIn()),
    ],
    [
      "a token whose payload was changed after signing, even once the original was verified",
      async () => {
        const { accessToken } = await signedIn();
        // The original passes both hops first, so any cache of verified tokens is warm.
        await gatewayUsers().getMe({}, { headers: { authorization: `Bearer ${accessToken}` } });
        const [header, payload, signature] = accessToken.split(".");
        const claims = JSON.parse(new TextDecoder().decode(base64url.decode(payload ?? "")));
        return `Bearer ${header}.${encodeSegment({ ...claims, roles: ["user", "admin"] })}.${signature}`;
      },
    ],
    [
      "a token with one character of its payload changed",
      async () => {
        const [header, payload = "", signature] = (await signedIn()).accessToken.split(".");
        const i = Math.floor(payload.length / 2);
        const flipped = payload.slice(0, i) + (payload[i] === "A" ? "B" : "A") + payload.slice(i + 1);
        return `Bearer ${header}.${flipped}.${signature}`;
      },
    ],
    [
      "an unsigned token (alg none) with the same claims",
      async () => {
        const { accessToken } = await signedIn();
        const header = { ...decodeProtectedHeader(accessToken), alg: "none" };
        return `Bearer ${encodeSegment(header)}.${encodeSegment(decodeJwt(accessToken))}.`;
      },
    ],
    [
      "an HS256 token keyed with the public JWKS",
      async () => {
        const { accessToken } = await signedIn();
        const jwks = await fetchJwks();
        return `Bearer ${await forge(accessToken, "HS256", new TextEncoder().encode(JSON.stringify(jwks)))}`;
      },
    ],
    [
      "an HS256 token keyed with the public key's x",
      async () => {
        const { accessToken } = await signedIn();
        const { kid } = decodeProtectedHeader(accessToken);
        const key = (await fetchJwks()).keys.find((k) => k.kid === kid);
        assert.ok(key?.x);
        return `Bearer ${await forge(accessToken, "HS256", new TextEncoder().encode(key.x))}`;
      },
    ],
    [
      "a token signed by another Ed25519 key under the real kid",
      async () => {
        const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
        return `Bearer ${await forge((await signedIn()).accessToken, "EdDSA", privateKey)}`;
      },
    ],
    [
      "an expired token signed by another Ed25519 key under an unknown kid",
      async () => {
        const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
        const { accessToken } = await signedIn();
        const past = Math.floor(Date.now() / 1000) - 3600;
        return `Bearer ${await forge(accessToken, "EdDSA", privateKey, {
          kid: randomUUID(),
          claims: { iat: past - 900, exp: past },
        })}`;
      },
    ],
  ];

  for (const [name, authorization] of refused) {
    test(`${name} is refused with UNAUTHENTICATED at the gateway and at the user service`, async () => {
      const value = await authorization();
      const headers: Record<string, string> = value ? { authorization: value } : {};
      await assertCode(gatewayUsers().getMe({}, { headers }), Code.Unauthenticated, "gateway");
      const direct: CallOptions = value?.startsWith("Bearer ")
        ? { accessToken: value.slice("Bearer ".length) }
        : { headers };
      await assertCode(directUsers().getMe({}, direct), Code.Unauthenticated, "user service");
      if (value?.startsWith("Bearer ")) {
        const accessToken = value.slice("Bearer ".length);
        await assertCode(auth().validateToken({ accessToken }), Code.Unauthenticated, "ValidateToken");
      }
    });
  }
});

/** A bearer header for a token the given signer makes for the user's session. */
async function bearerFor(
  signer: Awaited<ReturnType<typeof realKeySigner>>,
  user: { userId: string; accessToken: string },
) {
  const { sid } = decodeJwt(user.accessToken);
  const { token } = await signer.sign({
    userId: user.userId,
    sessionId: String(sid),
    email: "",
    roles: ["user"],
    emailVerified: false,
  });
  return `Bearer ${token}`;
}

/** Re-signs a real token's claims with another algorithm or key, keeping its kid and typ. */
async function forge(
  accessToken: string,
  alg: string,
  key: CryptoKey | Uint8Array,
  extra: { kid?: string; claims?: Record<string, unknown> } = {},
) {
  const { kid, typ } = decodeProtectedHeader(accessToken);
  const header = { alg, typ: typ ?? "at+jwt", kid: extra.kid ?? kid ?? "" };
  return new SignJWT({ ...decodeJwt(accessToken), ...extra.claims }).setProtectedHeader(header).sign(key);
}

describe("INTERNAL methods", () => {
  const createUser = () => ({ userId: randomUUID(), email: uniqueEmail("internal"), displayName: "Ivy" });

  test("the gateway does not route an INTERNAL method", async () => {
    const { accessToken } = await signedIn();
    const users = gatewayClient(UserService, mesh.url, "connect-json", () => accessToken);
    await assertCode(users.createUser(createUser()), Code.Unimplemented, "gateway");
  });

  test("a service refuses an INTERNAL call without mesh credentials, even from a signed-in user", async () => {
    const { accessToken } = await signedIn();
    await assertCode(
      directUsers().createUser(createUser(), { accessToken }),
      Code.PermissionDenied,
      "no mesh",
    );
    await assertCode(directUsers().createUser(createUser()), Code.PermissionDenied, "nothing at all");
  });

  test("a service refuses mesh credentials made from the wrong secret", async () => {
    const wrong = createMeshCredentials("not-the-mesh-secret-but-long-enough-0123456789", "auth");
    await assertCode(
      directUsers({ mesh: wrong }).createUser(createUser()),
      Code.Unauthenticated,
      "wrong secret",
    );
  });

  test("a service serves an INTERNAL call with mesh credentials from the mesh secret", async () => {
    const right = createMeshCredentials(mesh.env.user.MESH_SECRET ?? "", "auth");
    const request = createUser();
    const { user } = await directUsers({ mesh: right }).createUser(request);
    assert.equal(user?.id, request.userId);
  });
});

describe("the published key set", () => {
  test("/.well-known/jwks.json lists Ed25519 public keys with a kid and no private parts", async () => {
    const res = await fetch(`${mesh.url}/.well-known/jwks.json`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^application\/jwk-set\+json/);
    const { keys } = (await res.json()) as { keys: JWK[] };
    assert.ok(keys.length >= 1);
    for (const key of keys) {
      assert.equal(key.kty, "OKP");
      assert.equal(key.crv, "Ed25519");
      assert.equal(key.alg, "EdDSA");
      assert.ok(key.kid, "every key has a kid");
      assert.ok(key.x, "every key has its public part");
      assert.equal(key.d, undefined, "no private part");
    }

    const { accessToken } = await signedIn();
    const { kid } = decodeProtectedHeader(accessToken);
    assert.ok(
      keys.some((k) => k.kid === kid),
      "the key that signs access tokens is published",
    );
    const viaRpc = await auth().getJwks({});
    assert.deepEqual(
      viaRpc.keys.map((k) => k.kid),
      keys.map((k) => k.kid),
    );
  });

  test("the published key set carries only JWK members", async () => {
    for (const key of (await fetchJwks()).keys) {
      assert.deepEqual(
        Object.keys(key).filter((k) => !["kty", "crv", "x", "kid", "alg", "use"].includes(k)),
        [],
        `a published key has members that are not JWK members: ${JSON.stringify(key)}`,
      );
    }
  });
});
