// The identity journeys a person makes, end to end through the gateway over the whole mesh
// (auth, user, otp, notify; real PostgreSQL, NATS JetStream and SMTP), each code read from the
// mail notify sent. Failure paths and limits are in services/auth/test/ (mfa, password-reset,
// delete-account) and services/otp/test/.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { MfaMethod } from "@protomesh/contracts/auth/v1/auth_pb";
import {
  assertCode,
  codeAfter,
  MAIL,
  type Mesh,
  mailTo,
  startMesh,
  uniqueEmail,
  waitUntil,
} from "@protomesh/testkit";
import {
  appCode,
  clients,
  type Session,
  signIn,
  verifiedAccount,
} from "../services/auth/test/account-helpers.ts";

const PASSWORD = "a long and unusual passphrase";
const NEW_PASSWORD = "another long unusual passphrase";

let mesh: Mesh;
before(async () => {
  mesh = await startMesh({ services: ["user", "otp", "notify", "auth"] });
});
after(() => mesh?.stop());

/** True once the call fails with this code. */
const failsWith = (call: () => Promise<unknown>, code: Code) => async () => {
  try {
    await call();
    return false;
  } catch (err) {
    return (err as { code?: Code }).code === code;
  }
};

/** Waits until the gateway refuses a revoked session's access token (within a second or so). */
const accessRefused = (s: Session) =>
  waitUntil(
    failsWith(() => clients(mesh, s.accessToken).users.getMe({}), Code.Unauthenticated),
    2_000,
    "the revoked access token refused",
  );

/** Signs in and expects an MFA challenge. */
async function challenged(email: string, password: string) {
  const { result } = await clients(mesh).auth.signIn({ email, password });
  assert.equal(result.case, "mfaChallenge");
  return result.value;
}

describe("identity journeys through the gateway", () => {
  test("sign-up → code by email → verify → welcome", async () => {
    const email = uniqueEmail("journey");
    const { auth } = clients(mesh);
    const code = await codeAfter(mesh, email, MAIL.verify, () =>
      auth.signUp({ email, password: PASSWORD, displayName: "Jo" }),
    );
    const s = await signIn(auth, email, PASSWORD);
    await clients(mesh, s.accessToken).auth.verifyEmail({ code });
    const welcome = await mailTo(mesh, email, "Welcome to Protomesh");
    assert.match(welcome.text, /Jo/);
  });

  test("enable email MFA → sign-in needs the emailed code", async () => {
    const s = await verifiedAccount(mesh, "journey-email-mfa", PASSWORD);
    const me = clients(mesh, s.accessToken).auth;
    const enable = await codeAfter(mesh, s.email, MAIL.enableMfa, () =>
      me.enableMfa({ method: MfaMethod.EMAIL }),
    );
    assert.equal((await me.confirmMfa({ method: MfaMethod.EMAIL, code: enable })).recoveryCodes.length, 10);
    let challengeToken = "";
    const code = await codeAfter(mesh, s.email, MAIL.signIn, async () => {
      challengeToken = (await challenged(s.email, PASSWORD)).challengeToken;
    });
    const { tokens } = await clients(mesh).auth.verifyMfa({ challengeToken, method: MfaMethod.EMAIL, code });
    assert.equal((await clients(mesh, tokens?.accessToken).users.getMe({})).user?.id, s.userId);
  });

  test("TOTP enrolment and sign-in with a code computed from the secret; a recovery code once", async () => {
    const s = await verifiedAccount(mesh, "journey-totp", PASSWORD);
    const me = clients(mesh, s.accessToken).auth;
    const { totpSecret, otpauthUri } = await me.enableMfa({ method: MfaMethod.TOTP });
    assert.ok(otpauthUri.startsWith("otpauth://totp/Protomesh:"));
    const { recoveryCodes } = await me.confirmMfa({ method: MfaMethod.TOTP, code: appCode(totpSecret) });

    const code = appCode(totpSecret, Date.now() + 30_000);
    const viaApp = await clients(mesh).auth.verifyMfa({
      challengeToken: (await challenged(s.email, PASSWORD)).challengeToken,
      method: MfaMethod.TOTP,
      code,
    });
    assert.ok(viaApp.tokens?.accessToken);
    await assertCode(
      clients(mesh).auth.verifyMfa({
        challengeToken: (await challenged(s.email, PASSWORD)).challengeToken,
        method: MfaMethod.TOTP,
        code,
      }),
      Code.Unauthenticated,
      "the same code twice",
    );

    const recovery = recoveryCodes[0] as string;
    const viaRecovery = await clients(mesh).auth.verifyMfa({
      challengeToken: (await challenged(s.email, PASSWORD)).challengeToken,
      method: MfaMethod.RECOVERY_CODE,
      code: recovery,
    });
    assert.ok(viaRecovery.tokens?.accessToken);
    await assertCode(
      clients(mesh).auth.verifyMfa({
        challengeToken: (await challenged(s.email, PASSWORD)).challengeToken,
        method: MfaMethod.RECOVERY_CODE,
        code: recovery,
      }),
      Code.Unauthenticated,
      "the recovery code again",
    );
  });

  test("forgot password → code → reset → old sessions dead (refresh and access tokens refused)", async () => {
    const s = await verifiedAccount(mesh, "journey-reset", PASSWORD);
    const code = await codeAfter(mesh, s.email, MAIL.reset, () =>
      clients(mesh).auth.requestPasswordReset({ email: s.email }),
    );
    await clients(mesh).auth.resetPassword({ email: s.email, code, newPassword: NEW_PASSWORD });
    await assertCode(clients(mesh).auth.refreshToken({ refreshToken: s.refreshToken }), Code.Unauthenticated);
    await accessRefused(s);
    await signIn(clients(mesh).auth, s.email, NEW_PASSWORD);
  });

  test("change password: the other session dies, this one lives, the owner is told", async () => {
    const s = await verifiedAccount(mesh, "journey-change", PASSWORD);
    const other = await signIn(clients(mesh).auth, s.email, PASSWORD);
    await clients(mesh, s.accessToken).auth.changePassword({
      oldPassword: PASSWORD,
      newPassword: NEW_PASSWORD,
    });
    await accessRefused(other);
    assert.equal((await clients(mesh, s.accessToken).users.getMe({})).user?.id, s.userId);
    await mailTo(mesh, s.email, MAIL.passwordChanged);
  });

  test("list sessions and revoke one", async () => {
    const s = await verifiedAccount(mesh, "journey-sessions", PASSWORD);
    const other = await signIn(clients(mesh).auth, s.email, PASSWORD);
    const me = clients(mesh, s.accessToken).auth;
    const { sessions } = await me.listSessions({});
    const current = sessions.filter((x) => x.current);
    assert.equal(current.length, 1);
    const target = sessions.find((x) => !x.current);
    assert.ok(target);
    await me.revokeSession({ sessionId: target.id });
    await accessRefused(other);
    assert.equal((await me.listSessions({})).sessions.length, sessions.length - 1);
  });

  test("delete account → sign-in fails, profile gone, inbox gone", async () => {
    const s = await verifiedAccount(mesh, "journey-delete", PASSWORD);
    const me = clients(mesh, s.accessToken);
    assert.ok((await me.notify.listMyNotifications({})).notifications.length > 0);
    await me.auth.deleteAccount({ password: PASSWORD });
    await assertCode(clients(mesh).auth.signIn({ email: s.email, password: PASSWORD }), Code.Unauthenticated);
    await accessRefused(s);
    await mailTo(mesh, s.email, MAIL.deleted);
    // Someone else looks the user up: the profile is gone.
    const other = await verifiedAccount(mesh, "journey-witness", PASSWORD);
    await waitUntil(
      failsWith(() => clients(mesh, other.accessToken).users.getUser({ userId: s.userId }), Code.NotFound),
      10_000,
      "the profile gone",
    );
  });
});
