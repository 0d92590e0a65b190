// What the account-flow tests share: clients through the gateway, accounts with a verified email
// and TOTP codes.
import assert from "node:assert/strict";
import type { Client } from "@connectrpc/connect";
import { AuthService, MfaMethod } from "@protomesh/contracts/auth/v1/auth_pb";
import { NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { codeAfter, gatewayClient, MAIL, type Mesh, TEST_PASSWORD, uniqueEmail } from "@protomesh/testkit";
import { decodeJwt } from "jose";
import { Secret, TOTP } from "otpauth";

/** Clients of the mesh's gateway, optionally as a signed-in user. */
export function clients(mesh: Mesh, token?: string) {
  const as = () => token;
  return {
    auth: gatewayClient(AuthService, mesh.url, "connect-json", as),
    users: gatewayClient(UserService, mesh.url, "connect-json", as),
    notify: gatewayClient(NotifyService, mesh.url, "connect-json", as),
  };
}

/** A signed-in account. */
export interface Session {
  email: string;
  password: string;
  userId: string;
  accessToken: string;
  refreshToken: string;
}

/** Signs in and expects tokens (no MFA). */
export async function signIn(
  auth: Client<typeof AuthService>,
  email: string,
  password: string,
): Promise<Session> {
  const { result } = await auth.signIn({ email, password });
  assert.equal(result.case, "tokens", "sign-in gives tokens");
  const t = result.value;
  return {
    email,
    password,
    userId: String(decodeJwt(t.accessToken).sub),
    accessToken: t.accessToken,
    refreshToken: t.refreshToken,
  };
}

/** Signs up, confirms the emailed verification code, and signs in. */
export async function verifiedAccount(mesh: Mesh, tag = "flows", password = TEST_PASSWORD): Promise<Session> {
  const email = uniqueEmail(tag);
  const { auth } = clients(mesh);
  const code = await codeAfter(mesh, email, MAIL.verify, () =>
    auth.signUp({ email, password, displayName: "Flo" }),
  );
  const first = await signIn(auth, email, password);
  await clients(mesh, first.accessToken).auth.verifyEmail({ code });
  // A fresh session, whose token says the email is verified.
  return signIn(auth, email, password);
}

/**
 * The code an authenticator app shows for this secret now (or at another time). A step once
 * used (e.g. by ConfirmMfa) is refused afterwards, so a test that signs in right after takes
 * the next step's code, which the ±1 step window accepts.
 */
export const appCode = (secret: string, timestamp = Date.now()) =>
  new TOTP({ secret: Secret.fromBase32(secret) }).generate({ timestamp });

/** Turns on TOTP for the account and returns its secret and the recovery codes (if first). */
export async function enableTotp(mesh: Mesh, s: Session) {
  const { auth } = clients(mesh, s.accessToken);
  const { totpSecret } = await auth.enableMfa({ method: MfaMethod.TOTP });
  const { recoveryCodes } = await auth.confirmMfa({ method: MfaMethod.TOTP, code: appCode(totpSecret) });
  return { secret: totpSecret, recoveryCodes };
}
