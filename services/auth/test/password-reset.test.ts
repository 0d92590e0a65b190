// ChangePassword, RequestPasswordReset and ResetPassword through the gateway, with codes read
// from the mail notify sends: which sessions die, what stays the same for unknown emails, and
// that a reset neither skips MFA nor stays locked out.
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
import { appCode, clients, enableTotp, signIn, verifiedAccount } from "./account-helpers.ts";

const NEW_PASSWORD = "a brand new passphrase";
const MAX_FAILURES = 3;

let mesh: Mesh;
before(async () => {
  mesh = await startMesh({
    services: ["user", "otp", "notify", "auth"],
    // A low lock limit and no back-off, so a test can lock an account in a few tries.
    env: {
      auth: {
        SIGNIN_FREE_FAILURES: String(MAX_FAILURES),
        SIGNIN_MAX_FAILURES: String(MAX_FAILURES),
        SIGNIN_BACKOFF_BASE_MS: "0",
      },
    },
  });
});
after(() => mesh?.stop());

/** Resolves once the gateway refuses this access token (revocations reach it within a second). */
const refusedAtGateway = (accessToken: string) =>
  waitUntil(
    async () => {
      try {
        await clients(mesh, accessToken).users.getMe({});
        return false;
      } catch (err) {
        return (err as { code?: Code }).code === Code.Unauthenticated;
      }
    },
    2_000,
    "the old access token refused",
  );

/** A raw Connect call, to compare status and body byte for byte. */
async function raw(method: string, body: object) {
  const res = await fetch(`${mesh.url}/protomesh.auth.v1.AuthService/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.text() };
}

describe("password reset", () => {
  test("forgot password → emailed code → reset: every old session's refresh and access tokens are refused", async () => {
    const s = await verifiedAccount(mesh, "reset");
    const other = await signIn(clients(mesh).auth, s.email, s.password);
    const code = await codeAfter(mesh, s.email, MAIL.reset, () =>
      clients(mesh).auth.requestPasswordReset({ email: s.email.toUpperCase() }),
    );
    await clients(mesh).auth.resetPassword({ email: s.email, code, newPassword: NEW_PASSWORD });

    for (const old of [s, other]) {
      await assertCode(
        clients(mesh).auth.refreshToken({ refreshToken: old.refreshToken }),
        Code.Unauthenticated,
      );
      await refusedAtGateway(old.accessToken);
    }
    await assertCode(
      clients(mesh).auth.signIn({ email: s.email, password: s.password }),
      Code.Unauthenticated,
    );
    await signIn(clients(mesh).auth, s.email, NEW_PASSWORD);
    await mailTo(mesh, s.email, MAIL.passwordReset);
    await assertCode(
      clients(mesh).auth.resetPassword({ email: s.email, code, newPassword: "yet another passphrase" }),
      Code.InvalidArgument,
      "the code again",
    );
  });

  test("existing and unknown emails get the same answer to a reset request, and to a wrong code", async () => {
    const s = await verifiedAccount(mesh, "same-answer");
    const unknown = uniqueEmail("nobody");
    assert.deepEqual(
      await raw("RequestPasswordReset", { email: s.email }),
      await raw("RequestPasswordReset", { email: unknown }),
    );
    await mailTo(mesh, s.email, MAIL.reset);
    const wrong = { code: "000000", newPassword: NEW_PASSWORD };
    const known = await raw("ResetPassword", { ...wrong, email: s.email });
    assert.deepEqual(known, await raw("ResetPassword", { ...wrong, email: unknown }));
    assert.equal(known.status, 400);
    assert.match(known.body, /code: wrong or expired code/);
  });

  test("a new password that breaks the rules is refused naming new_password, and the code still works", async () => {
    const s = await verifiedAccount(mesh, "reset-policy");
    const code = await codeAfter(mesh, s.email, MAIL.reset, () =>
      clients(mesh).auth.requestPasswordReset({ email: s.email }),
    );
    const err = await assertCode(
      clients(mesh).auth.resetPassword({ email: s.email, code, newPassword: "password" }),
      Code.InvalidArgument,
    );
    assert.match(err.rawMessage, /^new_password: /);
    await clients(mesh).auth.resetPassword({ email: s.email, code, newPassword: NEW_PASSWORD });
  });

  test("an account locked by failed sign-ins can still reset, and then sign in", async () => {
    const s = await verifiedAccount(mesh, "locked");
    for (let i = 0; i < MAX_FAILURES + 1; i++) {
      await assertCode(
        clients(mesh).auth.signIn({ email: s.email, password: "wrong password!" }),
        Code.Unauthenticated,
      );
    }
    await assertCode(
      clients(mesh).auth.signIn({ email: s.email, password: s.password }),
      Code.Unauthenticated,
      "the right password while locked",
    );
    const code = await codeAfter(mesh, s.email, MAIL.reset, () =>
      clients(mesh).auth.requestPasswordReset({ email: s.email }),
    );
    await clients(mesh).auth.resetPassword({ email: s.email, code, newPassword: NEW_PASSWORD });
    await signIn(clients(mesh).auth, s.email, NEW_PASSWORD);
  });

  test("a reset does not turn MFA off: the next sign-in still asks for the second factor", async () => {
    const s = await verifiedAccount(mesh, "reset-mfa");
    const { secret } = await enableTotp(mesh, s);
    const code = await codeAfter(mesh, s.email, MAIL.reset, () =>
      clients(mesh).auth.requestPasswordReset({ email: s.email }),
    );
    await clients(mesh).auth.resetPassword({ email: s.email, code, newPassword: NEW_PASSWORD });
    const { result } = await clients(mesh).auth.signIn({ email: s.email, password: NEW_PASSWORD });
    assert.equal(result.case, "mfaChallenge");
    const { tokens } = await clients(mesh).auth.verifyMfa({
      challengeToken: result.value.challengeToken,
      method: MfaMethod.TOTP,
      code: appCode(secret, Date.now() + 30_000),
    });
    assert.ok(tokens?.accessToken);
  });
});

describe("change password", () => {
  test("ends every other session, keeps the current one, and emails the owner", async () => {
    const current = await verifiedAccount(mesh, "change");
    const other = await signIn(clients(mesh).auth, current.email, current.password);
    const auth = clients(mesh, current.accessToken).auth;
    await auth.changePassword({ oldPassword: current.password, newPassword: NEW_PASSWORD });

    await assertCode(
      clients(mesh).auth.refreshToken({ refreshToken: other.refreshToken }),
      Code.Unauthenticated,
    );
    await refusedAtGateway(other.accessToken);
    const { user } = await clients(mesh, current.accessToken).users.getMe({});
    assert.equal(user?.id, current.userId, "the current access token still works");
    await clients(mesh).auth.refreshToken({ refreshToken: current.refreshToken });
    await mailTo(mesh, current.email, MAIL.passwordChanged);
    await assertCode(
      clients(mesh).auth.signIn({ email: current.email, password: current.password }),
      Code.Unauthenticated,
    );
    await signIn(clients(mesh).auth, current.email, NEW_PASSWORD);
  });

  test("a wrong current password gets UNAUTHENTICATED; a bad new one INVALID_ARGUMENT naming new_password", async () => {
    const s = await verifiedAccount(mesh, "change-bad");
    const auth = clients(mesh, s.accessToken).auth;
    await assertCode(
      auth.changePassword({ oldPassword: "not my password", newPassword: NEW_PASSWORD }),
      Code.Unauthenticated,
    );
    const err = await assertCode(
      auth.changePassword({ oldPassword: s.password, newPassword: s.email }),
      Code.InvalidArgument,
    );
    assert.match(err.rawMessage, /^new_password: /);
    await assertCode(
      clients(mesh).auth.changePassword({ oldPassword: s.password, newPassword: NEW_PASSWORD }),
      Code.Unauthenticated,
      "without a token",
    );
    await signIn(clients(mesh).auth, s.email, s.password);
  });
});
