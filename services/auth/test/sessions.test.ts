// Sessions: the refresh grace window, ListSessions / RevokeSession / SignOutEverywhere with
// device and address, and SignedIn with new_device.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { AuthService, type Tokens } from "@protomesh/contracts/auth/v1/auth_pb";
import { SessionRevokedSchema, SignedInSchema } from "@protomesh/contracts/auth/v1/events_pb";
import {
  createGatewayCredentials,
  createLogger,
  createPool,
  createServiceClient,
  GATEWAY_TOKEN_HEADER,
  USER_AGENT_HEADER,
} from "@protomesh/platform";
import { assertCode, type Mesh, query, startMesh, uniqueEmail, waitUntil } from "@protomesh/testkit";
import { createPgAuthStore } from "../src/pg-auth-store.ts";
import { authEvents } from "./auth-events.ts";

const PASSWORD = "correct horse battery staple";
const GRACE_S = 10;
const FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const SAFARI =
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

let mesh: Mesh;
let auth: ReturnType<typeof createServiceClient<typeof AuthService>>;
before(async () => {
  mesh = await startMesh({
    services: ["auth", "user"],
    gateway: false,
    env: { auth: { REFRESH_GRACE_S: String(GRACE_S) } },
  });
  auth = createServiceClient(AuthService, mesh.addr("auth"));
});
after(async () => {
  auth?.close();
  await mesh?.stop();
});

/** Signs in as the gateway would call: the browser's User-Agent vouched for by its credential. */
async function signIn(email: string, userAgent = FIREFOX): Promise<Tokens> {
  const gateway = createGatewayCredentials(mesh.env.auth.GATEWAY_SECRET as string);
  const { result } = await auth.signIn(
    { email, password: PASSWORD },
    { headers: { [USER_AGENT_HEADER]: userAgent, [GATEWAY_TOKEN_HEADER]: await gateway.token() } },
  );
  assert.equal(result.case, "tokens");
  return result.value;
}

async function newAccount(tag: string) {
  const email = uniqueEmail(tag);
  await auth.signUp({ email, password: PASSWORD, displayName: "Sid" });
  return email;
}

const as = (tokens: Tokens) => ({ accessToken: tokens.accessToken });
const sha256 = (token: string) => createHash("sha256").update(token).digest();

/** Moves a refresh token's use back in time, as if that many seconds had passed since. */
const usedEarlier = (refreshToken: string, seconds: number) =>
  query(
    mesh.env.auth.DATABASE_URL ?? "",
    "UPDATE refresh_tokens SET used_at = used_at - make_interval(secs => $2) WHERE token_hash = $1",
    [sha256(refreshToken), seconds],
  );

describe("the refresh grace window", () => {
  test("two concurrent refreshes of one token both get tokens, the same successor, and the user stays signed in", async () => {
    const tokens = await signIn(await newAccount("race"));
    const [a, b] = await Promise.all([
      auth.refreshToken({ refreshToken: tokens.refreshToken }),
      auth.refreshToken({ refreshToken: tokens.refreshToken }),
    ]);
    assert.ok(a.tokens && b.tokens);
    assert.equal(a.tokens.refreshToken, b.tokens.refreshToken, "the same successor");
    assert.notEqual(a.tokens.accessToken, b.tokens.accessToken, "each gets a fresh access token");
    for (const t of [a.tokens, b.tokens]) await auth.validateToken({ accessToken: t.accessToken });
    const next = await auth.refreshToken({ refreshToken: a.tokens.refreshToken });
    assert.ok(next.tokens?.refreshToken, "the successor works: still signed in");
  });

  test("a retry late in the window (a flaky network) gets the same successor, and the user stays signed in", async () => {
    const tokens = await signIn(await newAccount("retry"));
    const { tokens: first } = await auth.refreshToken({ refreshToken: tokens.refreshToken });
    assert.ok(first);
    await usedEarlier(tokens.refreshToken, GRACE_S - 2);
    const { tokens: retry } = await auth.refreshToken({ refreshToken: tokens.refreshToken });
    assert.equal(retry?.refreshToken, first.refreshToken, "the same successor");
    assert.ok((await auth.refreshToken({ refreshToken: first.refreshToken })).tokens, "still signed in");
  });

  test("a reuse after the window revokes the session", async () => {
    const tokens = await signIn(await newAccount("late"));
    const { tokens: next } = await auth.refreshToken({ refreshToken: tokens.refreshToken });
    assert.ok(next);
    // Just past the window: one longer than configured would take the reuse for a retry.
    await usedEarlier(tokens.refreshToken, GRACE_S + 1);
    await assertCode(
      auth.refreshToken({ refreshToken: tokens.refreshToken }),
      Code.Unauthenticated,
      "late reuse",
    );
    await assertCode(
      auth.refreshToken({ refreshToken: next.refreshToken }),
      Code.Unauthenticated,
      "successor after theft",
    );
  });

  test("the successor is stored sealed, and forgotten once the window has passed", async () => {
    const tokens = await signIn(await newAccount("sealed"));
    const { tokens: next } = await auth.refreshToken({ refreshToken: tokens.refreshToken });
    assert.ok(next);
    const url = mesh.env.auth.DATABASE_URL ?? "";
    const stored = async () =>
      (
        await query<{ successor_enc: Buffer | null }>(
          url,
          "SELECT successor_enc FROM refresh_tokens WHERE token_hash = $1",
          [sha256(tokens.refreshToken)],
        )
      )[0]?.successor_enc;
    const sealed = await stored();
    assert.ok(sealed && !sealed.includes(Buffer.from(next.refreshToken)), "kept, but not in the clear");

    await usedEarlier(tokens.refreshToken, 3600);
    const pool = createPool(url, createLogger("test", "silent"), 1);
    try {
      const store = createPgAuthStore(pool, {
        refreshS: 3600,
        secrets: { seal: () => Buffer.alloc(0), open: () => "" },
      });
      assert.ok((await store.dropExpiredSuccessors(10)) >= 1);
    } finally {
      await pool.end();
    }
    assert.equal(await stored(), null);
  });
});

describe("sessions", () => {
  test("ListSessions shows device, address and the current one, most recently used first", async () => {
    const email = await newAccount("list");
    const laptop = await signIn(email, FIREFOX);
    const phone = await signIn(email, SAFARI);
    // The laptop refreshes: now it is the most recently used.
    const { tokens: laptop2 } = await auth.refreshToken({ refreshToken: laptop.refreshToken });
    assert.ok(laptop2);
    const { sessions } = await auth.listSessions({}, as(phone));
    assert.deepEqual(
      sessions.map((s) => [s.device, s.current]),
      [
        ["Firefox on Linux", false],
        ["Safari on iOS", true],
      ],
    );
    assert.ok(sessions.every((s) => s.ip === "127.0.0.1" && s.createTime && s.lastUsedTime));
  });

  test("RevokeSession ends one session; another user's or an unknown id gets NOT_FOUND", async () => {
    const email = await newAccount("revoke");
    const laptop = await signIn(email, FIREFOX);
    const phone = await signIn(email, SAFARI);
    const { sessions } = await auth.listSessions({}, as(laptop));
    const phoneSession = sessions.find((s) => !s.current);
    assert.ok(phoneSession);

    const mallory = await signIn(await newAccount("mallory"));
    const err = await assertCode(
      auth.revokeSession({ sessionId: phoneSession.id }, as(mallory)),
      Code.NotFound,
      "another user's session",
    );
    await assertCode(
      auth.revokeSession({ sessionId: crypto.randomUUID() }, as(mallory)),
      Code.NotFound,
      "an unknown session",
    ).then((unknown) => assert.equal(unknown.rawMessage, err.rawMessage, "the same answer"));
    assert.equal((await auth.listSessions({}, as(laptop))).sessions.length, 2, "untouched by mallory");

    await auth.revokeSession({ sessionId: phoneSession.id }, as(laptop));
    await assertCode(
      auth.refreshToken({ refreshToken: phone.refreshToken }),
      Code.Unauthenticated,
      "revoked phone",
    );
    await assertCode(auth.revokeSession({ sessionId: phoneSession.id }, as(laptop)), Code.NotFound, "twice");
    assert.deepEqual(
      (await auth.listSessions({}, as(laptop))).sessions.map((s) => s.current),
      [true],
    );
    const revoked = await waitUntil(async () =>
      (await authEvents(mesh.nats.url, SessionRevokedSchema)).find((e) => e.sessionId === phoneSession.id),
    );
    assert.equal(revoked.reason, "revoked by the user");
  });

  test("SignOutEverywhere ends every session, the current one included", async () => {
    const email = await newAccount("everywhere");
    const one = await signIn(email, FIREFOX);
    const two = await signIn(email, SAFARI);
    await auth.signOutEverywhere({}, as(one));
    for (const t of [one, two]) {
      await assertCode(auth.refreshToken({ refreshToken: t.refreshToken }), Code.Unauthenticated, "refresh");
    }
    await assertCode(
      auth.validateToken({ accessToken: two.accessToken }),
      Code.Unauthenticated,
      "access token",
    );
  });

  test("SignedIn says new_device only for a known user on a new device or address", async () => {
    const email = await newAccount("alert");
    const first = await signIn(email, FIREFOX);
    await signIn(email, FIREFOX);
    await signIn(email, SAFARI);
    const { sub } = JSON.parse(Buffer.from(first.accessToken.split(".")[1] ?? "", "base64url").toString());
    const events = await waitUntil(async () => {
      const mine = (await authEvents(mesh.nats.url, SignedInSchema)).filter((e) => e.userId === sub);
      return mine.length === 3 ? mine : undefined;
    });
    assert.deepEqual(
      events.map((e) => [e.device, e.newDevice]),
      [
        ["Firefox on Linux", false],
        ["Firefox on Linux", false],
        ["Safari on iOS", true],
      ],
    );
    assert.ok(events.every((e) => e.email === email && e.ip === "127.0.0.1"));
  });
});
