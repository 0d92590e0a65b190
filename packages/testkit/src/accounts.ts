// Accounts for tests: a signed-up, signed-in user in one call.
import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { type AuthService, type Tokens, TokensSchema } from "@protomesh/contracts/auth/v1/auth_pb";
import { decodeJwt } from "jose";
import { uniqueEmail } from "./clients.ts";
import { rememberSecrets } from "./logs.ts";

/** The password test accounts get unless a test says otherwise: long and not a common one. */
export const TEST_PASSWORD = "correct horse battery staple";

/** A test account, signed in. */
export interface TestAccount {
  userId: string;
  email: string;
  password: string;
  tokens: Tokens;
  accessToken: string;
}

/**
 * Signs up and signs in (the account's email stays unverified: SignUp answers alike for new and
 * existing emails, so the user id comes from the access token). Fails if sign-in asks for MFA.
 */
export async function signUpAndSignIn(
  auth: Client<typeof AuthService>,
  opts: { email?: string; password?: string; displayName?: string } = {},
): Promise<TestAccount> {
  const email = opts.email ?? uniqueEmail();
  const password = opts.password ?? TEST_PASSWORD;
  await auth.signUp({ email, password, displayName: opts.displayName ?? "Test User" });
  const { result } = await auth.signIn({ email, password });
  if (result.case !== "tokens") throw new Error(`sign-in did not return tokens (${result.case})`);
  const tokens = create(TokensSchema, result.value);
  // Access tokens need no remembering: anything shaped like a JWT counts as a leak.
  rememberSecrets(password, tokens.refreshToken);
  return {
    userId: String(decodeJwt(tokens.accessToken).sub),
    email,
    password,
    tokens,
    accessToken: tokens.accessToken,
  };
}
