// DeleteAccount through the gateway: what it needs (password, and a code when MFA is on), and
// what is left afterwards: nothing that tells the account ever existed.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { MfaMethod } from "@protomesh/contracts/auth/v1/auth_pb";
import {
  assertCode,
  MAIL,
  type Mesh,
  mailTo,
  query,
  startMesh,
  uniqueEmail,
  waitUntil,
} from "@protomesh/testkit";
import { appCode, clients, enableTotp, signIn, verifiedAccount } from "./account-helpers.ts";

let mesh: Mesh;
before(async () => {
  mesh = await startMesh({ services: ["user", "otp", "notify", "auth"] });
});
after(() => mesh?.stop());

/** A raw Connect call, to compare status and body byte for byte. */
async function rawSignIn(email: string, password: string) {
  const res = await fetch(`${mesh.url}/protomesh.auth.v1.AuthService/SignIn`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password }),
  });
  return { status: res.status, body: await res.text() };
}

/** True once the call fails with this code. */
const failsWith = (call: () => Promise<unknown>, code: Code) => async () => {
  try {
    await call();
    return false;
  } catch (err) {
    return (err as { code?: Code }).code === code;
  }
};

describe("delete account", () => {
  test("afterwards sign-in fails like an unknown account, tokens die, profile and inbox are gone, the email can sign up again", async () => {
    const s = await verifiedAccount(mesh, "delete");
    const other = await signIn(clients(mesh).auth, s.email, s.password);
    const me = clients(mesh, s.accessToken);
    assert.ok((await me.notify.listMyNotifications({})).notifications.length > 0, "the inbox has mail");

    await me.auth.deleteAccount({ password: s.password });

    assert.deepEqual(await rawSignIn(s.email, s.password), await rawSignIn(uniqueEmail("never"), s.password));
    await assertCode(
      clients(mesh).auth.refreshToken({ refreshToken: other.refreshToken }),
      Code.Unauthenticated,
    );
    await waitUntil(
      failsWith(() => clients(mesh, other.accessToken).users.getMe({}), Code.Unauthenticated),
      2_000,
      "the old access token refused",
    );
    await mailTo(mesh, s.email, MAIL.deleted);
    // user and notify consume UserDeleted: the profile and every inbox row go.
    const count = async (service: "user" | "notify", sql: string) =>
      (await query(mesh.env[service].DATABASE_URL ?? "", sql, [s.userId])).length;
    await waitUntil(
      async () =>
        (await count("user", "SELECT 1 FROM users WHERE id = $1")) === 0 &&
        (await count("notify", "SELECT 1 FROM notifications WHERE user_id = $1")) === 0,
      10_000,
      "profile and inbox deleted",
    );

    // The email is free again: a new account, a new user, nothing of the old one.
    const { auth } = clients(mesh);
    await auth.signUp({ email: s.email, password: s.password, displayName: "Again" });
    const fresh = await signIn(auth, s.email, s.password);
    assert.notEqual(fresh.userId, s.userId);
    await waitUntil(
      failsWith(() => clients(mesh, fresh.accessToken).users.getUser({ userId: s.userId }), Code.NotFound),
      10_000,
      "GetUser of the deleted user: NOT_FOUND",
    );
  });

  test("a wrong password is refused, and with MFA on a current code is needed", async () => {
    const s = await verifiedAccount(mesh, "delete-mfa");
    const { secret } = await enableTotp(mesh, s);
    const me = clients(mesh, s.accessToken).auth;
    await assertCode(
      me.deleteAccount({ password: "not the password" }),
      Code.Unauthenticated,
      "wrong password",
    );
    const err = await assertCode(me.deleteAccount({ password: s.password }), Code.InvalidArgument, "no code");
    assert.match(err.rawMessage, /^code: /);
    await assertCode(
      me.deleteAccount({ password: s.password, codeMethod: MfaMethod.TOTP, code: "12345678" }),
      Code.Unauthenticated,
      "a wrong code",
    );
    await me.deleteAccount({
      password: s.password,
      codeMethod: MfaMethod.TOTP,
      code: appCode(secret, Date.now() + 30_000),
    });
    await assertCode(
      clients(mesh).auth.signIn({ email: s.email, password: s.password }),
      Code.Unauthenticated,
    );
  });
});
