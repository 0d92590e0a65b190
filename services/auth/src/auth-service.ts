import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AuthService, MfaChallengeSchema } from "@protomesh/contracts/auth/v1/auth_pb";
import type { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  type AccessTokenVerifier,
  type CallContext,
  Code,
  ConnectError,
  fail,
  requireUser,
  type ServiceClient,
  type ServiceHandlers,
} from "@protomesh/platform";
import { toClaims, toJwk, toSessions, toTokens } from "./convert.ts";
import type { KeyRing } from "./key-ring.ts";
import { checkNewPassword, normalizePassword } from "./password-policy.ts";
import type { PasswordHasher } from "./passwords.ts";
import type { AuthStore } from "./pg-auth-store.ts";
import type { RolesOf, StartSession } from "./sessions.ts";
import { BAD_CREDENTIALS, type SignInThrottle } from "./sign-in-throttle.ts";
import type { EmailVerification } from "./verification.ts";

/** Emails are compared case-insensitively everywhere, so they are stored lower-cased. */
export const normalizeEmail = (email: string) => email.trim().toLowerCase();

const BAD_REFRESH = "invalid refresh token";

/** The second-factor step of SignIn, provided by the MFA part (mfa.ts). */
export interface MfaGate {
  /** A challenge when the account has a second factor on (the sign-in then stops there). */
  challenge(
    account: { userId: string; email: string },
    ctx: CallContext,
  ): Promise<MessageInitShape<typeof MfaChallengeSchema> | undefined>;
}

/** The methods built outside this file (account-flows.ts, mfa.ts). */
export type AccountFlowHandlers = Pick<
  ServiceHandlers<typeof AuthService>,
  | "changePassword"
  | "requestPasswordReset"
  | "resetPassword"
  | "deleteAccount"
  | "enableMfa"
  | "confirmMfa"
  | "sendMfaCode"
  | "disableMfa"
  | "verifyMfa"
>;

export interface AuthDeps {
  store: AuthStore;
  passwords: PasswordHasher;
  keys: KeyRing;
  verifier: AccessTokenVerifier;
  users: ServiceClient<typeof UserService>;
  verification: EmailVerification;
  throttle: SignInThrottle;
  startSession: StartSession;
  roles: RolesOf;
  mfa: MfaGate;
  refreshGraceS: number;
  issuer: string;
  audience: string;
}

/** AuthService handlers: the core here, the account flows and MFA from `flows`. */
export function createAuthHandlers(
  deps: AuthDeps,
  flows: AccountFlowHandlers,
): ServiceHandlers<typeof AuthService> {
  const { store, passwords, keys, users, throttle } = deps;

  // Sends the first verification code; a failure leaves the account unverified but usable, and
  // the owner can ask again with ResendVerification once signed in.
  const sendFirstCode = async (account: { userId: string; email: string }, ctx: CallContext) => {
    try {
      await deps.verification.send(account);
    } catch (err) {
      ctx.log.warn({ err, userId: account.userId }, "could not send the verification code at sign-up");
    }
  };

  // Creates the profile in user, then activates the credential (UserSignedUp) and sends the code.
  const completeSignUp = async (userId: string, email: string, displayName: string, ctx: CallContext) => {
    try {
      await users.createUser({ userId, email, displayName });
    } catch (err) {
      // A definite refusal frees the email; anything else may have created the profile, so
      // the pending row stays for a retry or the sweeper to settle.
      if (err instanceof ConnectError && err.code === Code.AlreadyExists) {
        // user already has a profile with this email (and auth no account): answer as always.
        await store.deletePending(userId);
        return;
      }
      if (err instanceof ConnectError && err.code === Code.InvalidArgument) {
        await store.deletePending(userId);
        throw err;
      }
      ctx.log.warn({ err, userId }, "creating the profile failed; sign-up left pending");
      throw fail(Code.Unavailable, "sign-up could not be completed right now; try again");
    }
    if (await store.activate(userId, displayName)) await sendFirstCode({ userId, email }, ctx);
  };

  return {
    ...flows,

    async signUp(req, ctx) {
      const email = normalizeEmail(req.email);
      const password = checkNewPassword(req.password, email);
      const hashing = { signal: ctx.signal, keys: [`ip:${ctx.clientIp}`, `account:${email}`] };
      const existing = await store.findByEmail(email);
      if (!existing) {
        const hash = await passwords.hash(password, hashing);
        const userId = await store.reservePending(email, hash);
        // Lost a race for the email: the winner's sign-up stands, this one answers like any other.
        if (userId) await completeSignUp(userId, email, req.displayName, ctx);
        return {};
      }
      // The same bcrypt work as a new sign-up, so timing does not tell the two apart; it also
      // recognises a retry of one's own sign-up that was left pending.
      const same = await passwords.verify(password, existing.passwordHash, hashing);
      if (existing.status === "active") await store.noteSignUpAttempt(existing.userId);
      else if (same) await completeSignUp(existing.userId, email, req.displayName, ctx);
      return {};
    },

    async signIn(req, ctx) {
      const email = normalizeEmail(req.email);
      // Before any bcrypt work: a locked account or address costs the attacker nothing to ask.
      const attempt = await throttle.attempt(email, ctx.clientIp);
      let ok = false;
      let account: Awaited<ReturnType<AuthStore["findActive"]>>;
      try {
        account = await store.findActive(email);
        // Unknown emails cost a bcrypt comparison too, so timing does not reveal which exist.
        ok = await passwords.verify(normalizePassword(req.password), account?.passwordHash, {
          signal: ctx.signal,
          keys: [`ip:${ctx.clientIp}`, `account:${email}`],
        });
      } catch (err) {
        await attempt.abandoned();
        throw err;
      }
      if (!account || !ok) throw fail(Code.Unauthenticated, BAD_CREDENTIALS);
      await attempt.succeeded();
      const challenge = await deps.mfa.challenge(account, ctx);
      if (challenge) return { result: { case: "mfaChallenge", value: challenge } };
      return { result: { case: "tokens", value: await deps.startSession(account, ctx) } };
    },

    async verifyEmail(req, ctx) {
      const { userId } = requireUser(ctx);
      const account = await store.findActiveById(userId);
      if (!account) throw fail(Code.Unauthenticated, "this account no longer exists");
      if (account.emailVerified) return {};
      await deps.verification.check(userId, req.code);
      const { profile } = await users.getUser({ userId });
      await store.markEmailVerified(userId, profile?.displayName ?? "");
      return {};
    },

    async resendVerification(_req, ctx) {
      const { userId } = requireUser(ctx);
      const account = await store.findActiveById(userId);
      if (!account) throw fail(Code.Unauthenticated, "this account no longer exists");
      if (account.emailVerified) throw fail(Code.FailedPrecondition, "the email address is already verified");
      await deps.verification.send(account);
      return {};
    },

    async refreshToken(req, ctx) {
      const outcome = await store.rotate(req.refreshToken, deps.refreshGraceS);
      if (outcome.kind === "reused") {
        ctx.log.warn(
          "a used refresh token was presented again after the grace window; its session is revoked",
        );
      }
      if (outcome.kind !== "rotated") throw fail(Code.Unauthenticated, BAD_REFRESH);
      // Roles are read at every refresh, so a change made in user applies from the next one.
      const roles = await deps.roles(outcome.userId);
      return { tokens: toTokens(await keys.sign({ ...outcome, roles }), outcome) };
    },

    async signOut(req) {
      await store.revokeByRefreshToken(req.refreshToken);
      return {};
    },

    async signOutEverywhere(_req, ctx) {
      await store.revokeAll(requireUser(ctx).userId, "signed out everywhere");
      return {};
    },

    async listSessions(_req, ctx) {
      const user = requireUser(ctx);
      return { sessions: toSessions(await store.listSessions(user.userId), user.sessionId) };
    },

    async revokeSession(req, ctx) {
      const { userId } = requireUser(ctx);
      // Another user's session gets the answer an unknown id gets: its existence is not revealed.
      if (!(await store.revokeUserSession(userId, req.sessionId, "revoked by the user"))) {
        throw fail(Code.NotFound, "no active session with this id");
      }
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
