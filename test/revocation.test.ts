// Revoking a session reaches every token verifier: its access token, valid for minutes more,
// is refused within a second at the gateway and at every service, including replicas that
// start later. Other sessions of the same user carry on.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { EmailVerifiedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { createServiceClient } from "@protomesh/platform";
import {
  failure,
  gatewayClient,
  type Mesh,
  publishEvent,
  signUpAndSignIn,
  startMesh,
  uniqueEmail,
  waitUntil,
  within,
} from "@protomesh/testkit";

const PASSWORD = "correct horse battery";
let mesh: Mesh;
before(async () => {
  // No refresh grace window: a second use of a refresh token is theft at once (the window is
  // tested in services/auth/test/sessions.test.ts).
  mesh = await startMesh({ services: ["auth", "user", "notify"], env: { auth: { REFRESH_GRACE_S: "0" } } });
});
after(() => mesh?.stop());

const auth = () => gatewayClient(AuthService, mesh.url, "connect-json");

async function session(email: string) {
  const { result } = await auth().signIn({ email, password: PASSWORD });
  assert.equal(result.case, "tokens");
  return result.value;
}

/** Where a token is checked: the gateway, user directly, and auth's ValidateToken. */
function verifiers(userAddr: string) {
  const direct = createServiceClient(UserService, userAddr);
  return {
    gateway: (token: string) => gatewayClient(UserService, mesh.url, "connect-json", () => token).getMe({}),
    user: (token: string) => direct.getMe({}, { accessToken: token }),
    auth: (token: string) => auth().validateToken({ accessToken: token }),
    close: () => direct.close(),
  };
}

async function refusedEverywhere(v: ReturnType<typeof verifiers>, token: string) {
  for (const check of [v.gateway, v.user, v.auth]) {
    const err = await failure(check(token));
    if (err.code !== Code.Unauthenticated) return false;
  }
  return true;
}

for (const [how, revoke] of [
  ["signing out", (t: { refreshToken: string }) => auth().signOut({ refreshToken: t.refreshToken })],
  [
    "a reused refresh token",
    async (t: { refreshToken: string }) => {
      await auth().refreshToken({ refreshToken: t.refreshToken });
      await failure(auth().refreshToken({ refreshToken: t.refreshToken }));
    },
  ],
] as const) {
  test(`after ${how}, the session's access token is refused everywhere within a second`, async (t) => {
    const email = uniqueEmail("revoke");
    await auth().signUp({ email, password: PASSWORD, displayName: "Rev" });
    const doomed = await session(email);
    const other = await session(email);
    const v = verifiers(mesh.addr("user"));
    t.after(() => v.close());
    // Every verifier has seen (and cached) the token as valid.
    await v.gateway(doomed.accessToken);
    await v.user(doomed.accessToken);
    await v.auth(doomed.accessToken);

    await revoke(doomed);
    await waitUntil(
      () => refusedEverywhere(v, doomed.accessToken),
      1_000,
      "refused at gateway, user and auth",
    );
    assert.match((await failure(v.gateway(doomed.accessToken))).rawMessage, /revoked/);

    // The user's other session is untouched.
    assert.ok((await v.gateway(other.accessToken)).user);
    assert.ok((await v.user(other.accessToken)).user);

    // A replica that starts after the revocation learns it too.
    const late = await mesh.start("user", { env: { PORT: "0" } });
    t.after(() => late.stop());
    const lateClient = createServiceClient(UserService, `127.0.0.1:${late.port}`);
    t.after(() => lateClient.close());
    await waitUntil(
      async () =>
        (await failure(lateClient.getMe({}, { accessToken: doomed.accessToken }))).code ===
        Code.Unauthenticated,
      5_000,
      "the late replica refuses it",
    );
    assert.ok((await lateClient.getMe({}, { accessToken: other.accessToken })).user);
  });
}

test("an open stream ends with UNAUTHENTICATED when its session is revoked", async () => {
  const email = uniqueEmail("revoke-stream");
  // This mesh has no otp: sign-up sends no code, so the welcome below is the stream's first message.
  const { userId, tokens } = await signUpAndSignIn(auth(), { email, password: PASSWORD, displayName: "Stu" });
  const stream = gatewayClient(NotifyService, mesh.url, "grpc", () => tokens.accessToken)
    .watchMyNotifications({})
    [Symbol.asyncIterator]();
  // One message through it proves the stream open on the service before the revocation.
  const first = stream.next();
  await publishEvent(mesh.nats.url, EmailVerifiedSchema, { userId, email, displayName: "Stu" });
  assert.equal((await within(first, 15_000, "a first message")).done, false);

  const ended = failure({ [Symbol.asyncIterator]: () => stream });
  await auth().signOut({ refreshToken: tokens.refreshToken });
  const err = await within(ended, 5_000, "the stream's end");
  assert.equal(err.code, Code.Unauthenticated);
  assert.match(err.rawMessage, /revoked/);
});
