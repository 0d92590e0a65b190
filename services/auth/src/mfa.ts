// Second factors: enrolment (email codes, authenticator apps), recovery codes, the challenge a
// sign-in gets when a factor is on, and the code checks that sensitive changes need.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type AuthService,
  type MfaChallengeSchema,
  MfaMethod,
  type TokensSchema,
} from "@protomesh/contracts/auth/v1/auth_pb";
import { Channel, type OtpService, Purpose, VerifyResult } from "@protomesh/contracts/otp/v1/otp_pb";
import {
  type CallContext,
  Code,
  ConnectError,
  fail,
  requireUser,
  retryLater,
  type ServiceClient,
  type ServiceHandlers,
} from "@protomesh/platform";
import { open, seal } from "./key-ring.ts";
import type { FactorMethod, MfaStore } from "./pg-mfa-store.ts";
import { hashRecoveryCode, newRecoveryCodes } from "./recovery-codes.ts";
import { newTotpSecret, totpStep, totpUri } from "./totp.ts";

/** How long a sign-in challenge lives: enough to open a mailbox or an app. */
export const CHALLENGE_TTL_MS = 5 * 60_000;

/** An account as the MFA and account flows need it. */
export interface Account {
  userId: string;
  email: string;
  emailVerified: boolean;
  passwordHash: string;
}

/** Who an MFA or account flow acts for: a sign-in's account, as startSession takes it. */
export type SessionAccount = Pick<Account, "userId" | "email" | "emailVerified">;

/** What the MFA handlers need from the rest of auth. */
export interface MfaDeps {
  store: MfaStore;
  accounts: { findActiveById(userId: string): Promise<Account | undefined> };
  /** Checks the account's password (counted as a sign-in attempt); throws UNAUTHENTICATED if wrong. */
  confirmPassword(account: Account, password: string, ctx: CallContext): Promise<void>;
  otp: ServiceClient<typeof OtpService>;
  /** Seals TOTP secrets at rest (AUTH_KEY_ENCRYPTION_KEY). */
  encryptionKey: Buffer;
  /** Creates the session of a finished sign-in (emits SignedIn) and returns its tokens. */
  startSession(account: SessionAccount, ctx: CallContext): Promise<MessageInitShape<typeof TokensSchema>>;
}

type MfaHandlerName = "enableMfa" | "confirmMfa" | "sendMfaCode" | "disableMfa" | "verifyMfa";
/** The MFA methods of AuthService. */
export type MfaHandlers = Pick<ServiceHandlers<typeof AuthService>, MfaHandlerName>;

const FACTOR_OF: Partial<Record<MfaMethod, FactorMethod>> = {
  [MfaMethod.EMAIL]: "email",
  [MfaMethod.TOTP]: "totp",
};
const METHOD_OF: Record<FactorMethod, MfaMethod> = { email: MfaMethod.EMAIL, totp: MfaMethod.TOTP };
const SIX_DIGITS = /^[0-9]{6}$/;

const WRONG_CODE = "wrong or expired code";
const BAD_CHALLENGE = "wrong code, or an unknown, expired or used challenge";

/** The signed-in caller's account; a token whose account is gone is refused. */
async function callerAccount(deps: MfaDeps, ctx: CallContext): Promise<Account> {
  const account = await deps.accounts.findActiveById(requireUser(ctx).userId);
  if (!account) throw fail(Code.Unauthenticated, "this account no longer exists");
  return account;
}

/** Passes a RESOURCE_EXHAUSTED from otp on (cooldown, cap); anything else means otp is down. */
function otpFailure(err: unknown, ctx: CallContext): ConnectError {
  if (err instanceof ConnectError && err.code === Code.ResourceExhausted) return err;
  ctx.log.warn({ err }, "otp call failed");
  return fail(Code.Unavailable, "codes cannot be sent right now; try again");
}

/** The MFA part of auth: handlers, the sign-in challenge and step-up code checks. */
export function createMfa(deps: MfaDeps) {
  const { store, otp } = deps;

  const issue = async (account: SessionAccount, purpose: Purpose, ctx: CallContext) => {
    try {
      await otp.issue({
        subject: account.userId,
        purpose,
        channel: Channel.EMAIL,
        destination: account.email,
        userId: account.userId,
      });
    } catch (err) {
      throw otpFailure(err, ctx);
    }
  };

  /** True for a right email code; LOCKED (too many wrong ones) becomes RESOURCE_EXHAUSTED. */
  const emailCodeOk = async (userId: string, purpose: Purpose, code: string, ctx: CallContext) => {
    if (!SIX_DIGITS.test(code)) return false;
    let res: Awaited<ReturnType<typeof otp.verify>>;
    try {
      res = await otp.verify({ subject: userId, purpose, code });
    } catch (err) {
      throw otpFailure(err, ctx);
    }
    if (res.result === VerifyResult.LOCKED) {
      const delay = res.retryDelay ? Number(res.retryDelay.seconds) * 1000 : 60_000;
      throw retryLater("too many wrong codes; try again later", delay);
    }
    return res.result === VerifyResult.VERIFIED;
  };

  /** True for a right code of a factor that is on; each TOTP step and recovery code works once. */
  const factorCodeOk = async (
    userId: string,
    method: MfaMethod,
    code: string,
    emailPurpose: Purpose,
    ctx: CallContext,
  ): Promise<boolean> => {
    const on = (await store.factors(userId)).filter((f) => f.enabled);
    if (on.length === 0) return false;
    if (method === MfaMethod.RECOVERY_CODE) return store.useRecoveryCode(userId, hashRecoveryCode(code));
    const factor = on.find((f) => f.method === FACTOR_OF[method]);
    if (!factor) return false;
    if (factor.method === "email") return emailCodeOk(userId, emailPurpose, code, ctx);
    if (!factor.secretEnc || !SIX_DIGITS.test(code)) return false;
    const step = totpStep(open(deps.encryptionKey, factor.secretEnc), code);
    return step !== undefined && (await store.useTotpStep(userId, step));
  };

  /**
   * Checks a second-factor code against the user's budget of wrong codes: a try is taken before
   * the check (so parallel guesses cannot overrun it) and a right code clears the run.
   */
  const checkCode = async (
    userId: string,
    method: MfaMethod,
    code: string,
    emailPurpose: Purpose,
    ctx: CallContext,
  ): Promise<boolean> => {
    const waitMs = await store.takeCodeTry(userId);
    if (waitMs !== undefined) throw retryLater("too many wrong codes; try again later", waitMs);
    const ok = await factorCodeOk(userId, method, code, emailPurpose, ctx);
    if (ok) await store.clearCodeTries(userId);
    return ok;
  };

  const handlers: MfaHandlers = {
    async enableMfa(req, ctx) {
      const account = await callerAccount(deps, ctx);
      const method = FACTOR_OF[req.method];
      if (!method) throw fail(Code.InvalidArgument, "method: must be MFA_METHOD_EMAIL or MFA_METHOD_TOTP");
      // Email MFA sends codes to the address, so it must be proven to be the owner's.
      if (method === "email" && !account.emailVerified) {
        throw fail(Code.FailedPrecondition, "verify your email address before turning on email MFA");
      }
      if (method === "email") {
        if (!(await store.startEnrolment(account.userId, "email"))) {
          throw fail(Code.FailedPrecondition, "email MFA is already on");
        }
        await issue(account, Purpose.ENABLE_MFA, ctx);
        return {};
      }
      const secret = newTotpSecret();
      if (!(await store.startEnrolment(account.userId, "totp", seal(deps.encryptionKey, secret)))) {
        throw fail(Code.FailedPrecondition, "authenticator-app MFA is already on");
      }
      return { totpSecret: secret, otpauthUri: totpUri(secret, account.email) };
    },

    async confirmMfa(req, ctx) {
      const account = await callerAccount(deps, ctx);
      const method = FACTOR_OF[req.method];
      if (!method) throw fail(Code.InvalidArgument, "method: must be MFA_METHOD_EMAIL or MFA_METHOD_TOTP");
      const factor = (await store.factors(account.userId)).find((f) => f.method === method);
      if (!factor) throw fail(Code.FailedPrecondition, "no enrolment started: call EnableMfa first");
      if (factor.enabled) throw fail(Code.FailedPrecondition, "this method is already on");
      let ok: boolean;
      if (method === "email") {
        ok = await emailCodeOk(account.userId, Purpose.ENABLE_MFA, req.code, ctx);
      } else {
        const step = factor.secretEnc && totpStep(open(deps.encryptionKey, factor.secretEnc), req.code);
        // Recording the step keeps the confirming code from also passing a sign-in.
        ok = typeof step === "number" && (await store.useTotpStep(account.userId, step));
      }
      if (!ok) throw fail(Code.InvalidArgument, `code: ${WRONG_CODE}`);
      const codes = newRecoveryCodes();
      const outcome = await store.confirm(account.userId, account.email, method, codes.map(hashRecoveryCode));
      if (outcome === "not-started") throw fail(Code.FailedPrecondition, "this method is already on");
      return { recoveryCodes: outcome === "first" ? codes : [] };
    },

    async sendMfaCode(_req, ctx) {
      const account = await callerAccount(deps, ctx);
      const on = (await store.factors(account.userId)).some((f) => f.method === "email" && f.enabled);
      if (!on) throw fail(Code.FailedPrecondition, "email MFA is off");
      await issue(account, Purpose.STEP_UP, ctx);
      return {};
    },

    async disableMfa(req, ctx) {
      const account = await callerAccount(deps, ctx);
      const method = FACTOR_OF[req.method];
      if (!method) throw fail(Code.InvalidArgument, "method: must be MFA_METHOD_EMAIL or MFA_METHOD_TOTP");
      const on = (await store.factors(account.userId)).some((f) => f.method === method && f.enabled);
      if (!on) throw fail(Code.FailedPrecondition, "this method is off");
      await deps.confirmPassword(account, req.password, ctx);
      await requireCode(account, req.codeMethod, req.code, ctx);
      if (!(await store.disable(account.userId, account.email, method))) {
        throw fail(Code.FailedPrecondition, "this method is off");
      }
      return {};
    },

    async verifyMfa(req, ctx) {
      // The try is taken before the code is checked: a challenge dies after its 5th code.
      const userId = await store.attemptChallenge(req.challengeToken);
      if (!userId) throw fail(Code.Unauthenticated, BAD_CHALLENGE);
      const account = await deps.accounts.findActiveById(userId);
      if (!account) throw fail(Code.Unauthenticated, BAD_CHALLENGE);
      if (!(await checkCode(userId, req.method, req.code, Purpose.SIGN_IN, ctx))) {
        throw fail(Code.Unauthenticated, BAD_CHALLENGE);
      }
      // Two right codes racing on one challenge: exactly one sign-in.
      if (!(await store.consumeChallenge(req.challengeToken)))
        throw fail(Code.Unauthenticated, BAD_CHALLENGE);
      return { tokens: await deps.startSession(account, ctx) };
    },
  };

  /**
   * When MFA is on, a current code of a factor that is on (STEP_UP for email): what turning MFA
   * off and deleting the account need besides the password. Throws UNAUTHENTICATED otherwise.
   */
  async function requireCode(account: Account, codeMethod: MfaMethod, code: string, ctx: CallContext) {
    const on = (await store.factors(account.userId)).some((f) => f.enabled);
    if (!on) return;
    if (codeMethod === MfaMethod.UNSPECIFIED || code === "") {
      throw fail(Code.InvalidArgument, "code: MFA is on, so a current code is required");
    }
    if (!(await checkCode(account.userId, codeMethod, code, Purpose.STEP_UP, ctx))) {
      throw fail(Code.Unauthenticated, "wrong password or code");
    }
  }

  /**
   * What SignIn calls after a right password: undefined when the account has no second factor,
   * else a new single-use challenge (the email code is sent now when email MFA is on).
   */
  async function challenge(
    account: Pick<Account, "userId" | "email">,
    ctx: CallContext,
  ): Promise<MessageInitShape<typeof MfaChallengeSchema> | undefined> {
    const on = (await store.factors(account.userId)).filter((f) => f.enabled).map((f) => f.method);
    if (on.length === 0) return undefined;
    const { token, expiresAt } = await store.createChallenge(account.userId, CHALLENGE_TTL_MS);
    if (on.includes("email")) {
      try {
        await otp.issue({
          subject: account.userId,
          purpose: Purpose.SIGN_IN,
          channel: Channel.EMAIL,
          destination: account.email,
          userId: account.userId,
        });
      } catch (err) {
        // Within the resend cooldown the code sent moments ago still works; if otp is down the
        // other factors (an app, a recovery code) still do, so the sign-in goes on either way.
        if (!(err instanceof ConnectError && err.code === Code.ResourceExhausted)) {
          ctx.log.warn({ err }, "could not send the sign-in code");
        }
      }
    }
    return {
      challengeToken: token,
      expireTime: timestampFromDate(expiresAt),
      methods: on.map((m) => METHOD_OF[m]),
    };
  }

  return { handlers, challenge, requireCode };
}

export type Mfa = ReturnType<typeof createMfa>;
