import type { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import type { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  type AccessTokenVerifier,
  Code,
  ConnectError,
  fail,
  type ServiceClient,
  type ServiceHandlers,
} from "@protomesh/platform";
import { toClaims, toJwk, toTokens } from "./convert.ts";
import type { KeyRing } from "./key-ring.ts";
import type { PasswordHasher } from "./passwords.ts";
import type { AuthStore } from "./pg-auth-store.ts";

/** Emails are compared case-insensitively everywhere, so they are stored lower-cased. */
export const normalizeEmail = (email: string) => email.trim().toLowerCase();

const BAD_CREDENTIALS = "wrong email or password";
const BAD_REFRESH = "invalid refresh token";

export interface AuthDeps {
  store: AuthStore;
  passwords: PasswordHasher;
  keys: KeyRing;
  verifier: AccessTokenVerifier;
  users: ServiceClient<typeof UserService>;
  issuer: string;
  audience: string;
}

/** AuthService handlers. */
export function createAuthHandlers(deps: AuthDeps): ServiceHandlers<typeof AuthService> {
  const { store, passwords, keys, users } = deps;

  const issueTokens = async (
    claims: { userId: string; sessionId: string; roles: string[] },
    refresh: { refreshToken: string; refreshExpiresAt: Date },
  ) => toTokens(await keys.sign(claims), refresh);

  return {
    async signUp(req, ctx) {
      const email = normalizeEmail(req.email);
      const hash = await passwords.hash(req.password);
      const userId = await store.reservePending(email, hash);
      if (!userId) throw fail(Code.AlreadyExists, "an account with this email already exists");
      try {
        await users.createUser({ userId, email, displayName: req.displayName });
      } catch (err) {
        // A definite refusal frees the email; anything else may have created the profile, so
        // the pending row stays for a retry or the sweeper to settle.
        if (
          err instanceof ConnectError &&
          (err.code === Code.AlreadyExists || err.code === Code.InvalidArgument)
        ) {
          await store.deletePending(userId);
          throw err.code === Code.AlreadyExists
            ? fail(Code.AlreadyExists, "an account with this email already exists")
            : err;
        }
        ctx.log.warn({ err, userId }, "creating the profile failed; sign-up left pending");
        throw fail(Code.Unavailable, "sign-up could not be completed right now; try again");
      }
      await store.activate(userId, req.displayName);
      return {};
    },

    async signIn(req, ctx) {
      const account = await store.findActive(normalizeEmail(req.email));
      // Unknown emails cost a bcrypt comparison too, so timing does not reveal which exist.
      const ok = await passwords.verify(req.password, account?.passwordHash);
      if (!account || !ok) throw fail(Code.Unauthenticated, BAD_CREDENTIALS);
      const session = await store.createSession(account.userId, ctx.clientIp);
      const tokens = await issueTokens(
        { userId: account.userId, sessionId: session.sessionId, roles: account.roles },
        session,
      );
      return { result: { case: "tokens", value: tokens } };
    },

    async refreshToken(req, ctx) {
      const outcome = await store.rotate(req.refreshToken);
      if (outcome.kind === "reused") {
        ctx.log.warn("a used refresh token was presented again; its session is revoked");
      }
      if (outcome.kind !== "rotated") throw fail(Code.Unauthenticated, BAD_REFRESH);
      return { tokens: await issueTokens(outcome, outcome) };
    },

    async signOut(req) {
      await store.revokeByRefreshToken(req.refreshToken);
      return {};
    },

    async validateToken(req) {
      const id = await deps.verifier.verify(req.accessToken);
      return { claims: toClaims(id, deps) };
    },

    async getJwks() {
      return { keys: (await keys.jwks()).keys.map(toJwk) };
    },
  };
}
