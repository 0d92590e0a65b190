import type { MessageInitShape } from "@bufbuild/protobuf";
import type { TokensSchema } from "@protomesh/contracts/auth/v1/auth_pb";
import type { CallContext } from "@protomesh/platform";
import { toTokens } from "./convert.ts";
import { deviceName } from "./device.ts";
import type { KeyRing } from "./key-ring.ts";
import type { AuthStore } from "./pg-auth-store.ts";

/** Whose session starts: an account whose password (and second factor, if any) checked out. */
export interface SessionAccount {
  userId: string;
  email: string;
  emailVerified: boolean;
}

/** Starts a session (device and address from the call), emits SignedIn, returns its tokens. */
export type StartSession = (
  account: SessionAccount,
  ctx: CallContext,
) => Promise<MessageInitShape<typeof TokensSchema>>;

/** Reads a user's roles from their one owner, UserService. */
export type RolesOf = (userId: string) => Promise<string[]>;

/** The end of every sign-in: SignIn without MFA, and VerifyMfa. */
export function createSessionStarter(deps: {
  store: AuthStore;
  keys: KeyRing;
  roles: RolesOf;
}): StartSession {
  return async (account, ctx) => {
    // Roles first: if user cannot answer, no session is left behind without tokens.
    const roles = await deps.roles(account.userId);
    const session = await deps.store.createSession(account, {
      ip: ctx.clientIp,
      device: deviceName(ctx.userAgent),
    });
    const access = await deps.keys.sign({
      userId: account.userId,
      sessionId: session.sessionId,
      roles,
      email: account.email,
      emailVerified: account.emailVerified,
    });
    return toTokens(access, session);
  };
}
