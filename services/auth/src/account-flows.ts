// Password change and reset, and account deletion.
import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import type { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { Channel, type OtpService, Purpose, VerifyResult } from "@protomesh/contracts/otp/v1/otp_pb";
import {
  type CallContext,
  Code,
  ConnectError,
  fail,
  type Pool,
  requireUser,
  retryLater,
  type ServiceClient,
  type ServiceHandlers,
} from "@protomesh/platform";
import { type AccountFlowHandlers as AllFlowHandlers, type MfaGate, normalizeEmail } from "./auth-service.ts";
import { type Account, createMfa, type Mfa } from "./mfa.ts";
import { checkNewPassword, normalizePassword } from "./password-policy.ts";
import type { PasswordHasher } from "./passwords.ts";
import { type AccountStore, createPgAccountStore } from "./pg-account-store.ts";
import type { AuthStore } from "./pg-auth-store.ts";
import { createPgMfaStore } from "./pg-mfa-store.ts";
import type { StartSession } from "./sessions.ts";
import type { SignInThrottle } from "./sign-in-throttle.ts";

type FlowName = "changePassword" | "requestPasswordReset" | "resetPassword" | "deleteAccount";
/** The account methods of AuthService. */
export type AccountFlowHandlers = Pick<ServiceHandlers<typeof AuthService>, FlowName>;

/** Bounds a bcrypt job per client address and per account, as sign-in does. */
export interface HashOptions {
  signal?: AbortSignal;
  keys?: string[];
}

/** A counted sign-in attempt (see sign-in-throttle.ts). */
export interface PasswordAttempt {
  succeeded(): Promise<void>;
  abandoned(): Promise<void>;
}

/** What the password check needs: the hasher and the sign-in throttle. */
export interface PasswordCheckDeps {
  passwords: { verify(password: string, hash: string | undefined, o?: HashOptions): Promise<boolean> };
  /** NFC, as sign-up stored it. */
  normalizePassword(password: string): string;
  throttle: { attempt(email: string, ip: string): Promise<PasswordAttempt> };
}

const WRONG_PASSWORD = "wrong password";
const WRONG_CODE = "code: wrong or expired code";

const hashKeys = (email: string, ctx: CallContext) => [`ip:${ctx.clientIp}`, `account:${email}`];

/**
 * Checks a signed-in user's password, counted by the sign-in throttle like a sign-in: someone
 * holding a stolen session gets no faster way to guess the password than the sign-in page.
 */
export function createPasswordCheck(deps: PasswordCheckDeps) {
  return async (account: Account, password: string, ctx: CallContext): Promise<void> => {
    let attempt: PasswordAttempt;
    try {
      attempt = await deps.throttle.attempt(account.email, ctx.clientIp);
    } catch (err) {
      // A locked account answers as a wrong password does, as at sign-in.
      if (err instanceof ConnectError && err.code === Code.Unauthenticated) {
        throw fail(Code.Unauthenticated, WRONG_PASSWORD);
      }
      throw err;
    }
    let ok: boolean;
    try {
      ok = await deps.passwords.verify(deps.normalizePassword(password), account.passwordHash, {
        signal: ctx.signal,
        keys: hashKeys(account.email, ctx),
      });
    } catch (err) {
      await attempt.abandoned();
      throw err;
    }
    if (!ok) throw fail(Code.Unauthenticated, WRONG_PASSWORD);
    await attempt.succeeded();
  };
}

/** What the account flows need from the rest of auth. */
export interface AccountFlowDeps {
  /** Lookups of active accounts (pg-auth-store). */
  lookup: {
    findActive(email: string): Promise<Account | undefined>;
    findActiveById(userId: string): Promise<Account | undefined>;
  };
  accounts: AccountStore;
  mfa: Pick<Mfa, "requireCode">;
  confirmPassword: ReturnType<typeof createPasswordCheck>;
  passwords: { hash(password: string, o?: HashOptions): Promise<string> };
  /** The password policy: returns the password NFC-normalised, or throws INVALID_ARGUMENT naming field. */
  checkNewPassword(password: string, email: string, field: string): string;
  throttle: { clearFailures(email: string): Promise<void> };
  otp: ServiceClient<typeof OtpService>;
}

/** ChangePassword, RequestPasswordReset, ResetPassword and DeleteAccount. */
export function createAccountFlows(deps: AccountFlowDeps): AccountFlowHandlers {
  const { accounts, otp } = deps;

  // Bound here, outside any call: work started through it after answering RequestPasswordReset
  // does not inherit that call's cancellation (grpc-js cancels child calls when the parent's
  // stream closes, i.e. as soon as the answer is sent).
  const detached = AsyncLocalStorage.bind((work: () => Promise<void>) => {
    void work();
  });

  const callerAccount = async (ctx: CallContext) => {
    const account = await deps.lookup.findActiveById(requireUser(ctx).userId);
    if (!account) throw fail(Code.Unauthenticated, "this account no longer exists");
    return account;
  };

  return {
    async changePassword(req, ctx) {
      const user = requireUser(ctx);
      const account = await callerAccount(ctx);
      const password = deps.checkNewPassword(req.newPassword, account.email, "new_password");
      await deps.confirmPassword(account, req.oldPassword, ctx);
      const hash = await deps.passwords.hash(password, {
        signal: ctx.signal,
        keys: hashKeys(account.email, ctx),
      });
      if (!(await accounts.changePassword(account, hash, user.sessionId))) {
        throw fail(Code.Aborted, "the password was changed meanwhile; try again");
      }
      return {};
    },

    async requestPasswordReset(req, ctx) {
      const email = normalizeEmail(req.email);
      const userId = (await deps.lookup.findActive(email))?.userId;
      // Both paths answer right after the same lookup; the code is issued afterwards, so an
      // existing account costs no extra time before the answer. Failures (e.g. the resend
      // cooldown) are not the caller's to see: they would tell that the account exists.
      if (userId) {
        const requestId = ctx.requestId;
        detached(async () => {
          try {
            await otp.issue(
              {
                subject: userId,
                purpose: Purpose.RESET_PASSWORD,
                channel: Channel.EMAIL,
                destination: email,
                userId,
              },
              { timeoutMs: 10_000, headers: { "x-request-id": requestId } },
            );
          } catch (err) {
            const cooldown = err instanceof ConnectError && err.code === Code.ResourceExhausted;
            ctx.log[cooldown ? "info" : "warn"]({ err, userId }, "no reset code was issued");
          }
        });
      }
      return {};
    },

    async resetPassword(req, ctx) {
      const email = normalizeEmail(req.email);
      const password = deps.checkNewPassword(req.newPassword, email, "new_password");
      const userId = (await deps.lookup.findActive(email))?.userId;
      // An unknown email asks otp about a subject that never has a code: the same answer (NO_CODE
      // → the wrong-code error) at the same cost as a wrong code for a real account.
      let res: Awaited<ReturnType<typeof otp.verify>>;
      try {
        res = await otp.verify({
          subject: userId ?? `unknown:${randomUUID()}`,
          purpose: Purpose.RESET_PASSWORD,
          code: req.code,
        });
      } catch (err) {
        ctx.log.warn({ err }, "otp verify failed");
        throw fail(Code.Unavailable, "the code cannot be checked right now; try again");
      }
      if (res.result === VerifyResult.LOCKED) {
        const delay = res.retryDelay ? Number(res.retryDelay.seconds) * 1000 : 60_000;
        throw retryLater("too many wrong codes; ask for a new code later", delay);
      }
      if (!userId || res.result !== VerifyResult.VERIFIED) throw fail(Code.InvalidArgument, WRONG_CODE);
      const hash = await deps.passwords.hash(password, { signal: ctx.signal, keys: hashKeys(email, ctx) });
      if (!(await accounts.resetPassword(userId, hash))) throw fail(Code.InvalidArgument, WRONG_CODE);
      // The owner proved control of the mailbox: a lockout an attacker caused ends here.
      await deps.throttle.clearFailures(email);
      return {};
    },

    async deleteAccount(req, ctx) {
      const account = await callerAccount(ctx);
      await deps.confirmPassword(account, req.password, ctx);
      await deps.mfa.requireCode(account, req.codeMethod, req.code, ctx);
      await accounts.deleteAccount(account.userId);
      return {};
    },
  };
}

/** auth's parts the account flows and MFA are built from. */
export interface AccountParts {
  pool: Pool;
  store: AuthStore;
  passwords: PasswordHasher;
  throttle: SignInThrottle;
  otp: ServiceClient<typeof OtpService>;
  startSession: StartSession;
  /** AUTH_KEY_ENCRYPTION_KEY: seals TOTP secrets. */
  encryptionKey: Buffer;
}

/** The account flows and MFA wired from auth's parts: the handlers and the SignIn gate app.ts plugs in. */
export function createAccountParts(parts: AccountParts): { flows: AllFlowHandlers; mfa: MfaGate } {
  const { pool, store, passwords, throttle, otp } = parts;
  const confirmPassword = createPasswordCheck({ passwords, normalizePassword, throttle });
  const mfa = createMfa({
    store: createPgMfaStore(pool),
    accounts: store,
    confirmPassword,
    otp,
    encryptionKey: parts.encryptionKey,
    startSession: parts.startSession,
  });
  const flows = createAccountFlows({
    lookup: store,
    accounts: createPgAccountStore(pool),
    mfa,
    confirmPassword,
    passwords,
    checkNewPassword,
    throttle,
    otp,
  });
  return { flows: { ...flows, ...mfa.handlers }, mfa };
}
