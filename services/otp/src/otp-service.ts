import { createHmac, randomInt, randomUUID, timingSafeEqual } from "node:crypto";
import type { OtpService } from "@protomesh/contracts/otp/v1/otp_pb";
import { type Logger, retryLater, type ServiceHandlers } from "@protomesh/platform";
import type { OtpConfig } from "./config.ts";
import { toIssueResponse, toOtpIssued, toVerifyResponse, type VerifyOutcome } from "./convert.ts";
import type { KeySession, OtpStore, WindowCount } from "./pg-otp-store.ts";

const HOUR_MS = 3_600_000;

type Policy = Pick<
  OtpConfig,
  | "hashKey"
  | "ttlS"
  | "resendCooldownS"
  | "maxIssuesPerHour"
  | "maxAttempts"
  | "maxFailures"
  | "failureWindowS"
>;

/** A uniformly random 6-digit code from the CSPRNG. */
export const newCode = () => randomInt(0, 1_000_000).toString().padStart(6, "0");

/**
 * The keyed hash a code is stored as. Subject and purpose are in it, so a stored hash is
 * worthless for any other key; without OTP_HASH_KEY a database dump cannot test guesses.
 */
export function hashCode(key: string, subject: string, purpose: number, code: string): Buffer {
  return createHmac("sha256", key).update(`${subject}|${purpose}|${code}`).digest();
}

/** OtpService handlers. */
export function createOtpHandlers(deps: {
  store: OtpStore;
  policy: Policy;
  log: Logger;
}): ServiceHandlers<typeof OtpService> {
  const { store, policy, log } = deps;
  const cooldownMs = policy.resendCooldownS * 1000;
  const windowMs = policy.failureWindowS * 1000;

  /** When the next code may be issued, given the issues of the last hour. */
  const nextIssueAt = (issues: WindowCount): Date => {
    const afterCooldown = (issues.newest?.getTime() ?? 0) + cooldownMs;
    const afterCap = issues.count >= policy.maxIssuesPerHour ? (issues.oldest?.getTime() ?? 0) + HOUR_MS : 0;
    return new Date(Math.max(afterCooldown, afterCap));
  };
  const issuesOfLastHour = (s: KeySession) => s.issuesSince(new Date(s.now.getTime() - HOUR_MS));

  return {
    async issue(req) {
      return store.withKey(req.subject, req.purpose, async (s) => {
        const issues = await issuesOfLastHour(s);
        const allowedAt = nextIssueAt(issues);
        if (allowedAt > s.now) {
          throw retryLater(
            "a code was sent recently for this subject and purpose; try again later",
            allowedAt.getTime() - s.now.getTime(),
          );
        }
        const code = newCode();
        const id = randomUUID();
        const expiresAt = new Date(s.now.getTime() + policy.ttlS * 1000);
        await s.replaceCode(
          { id, hash: hashCode(policy.hashKey, req.subject, req.purpose, code), attempts: 0, expiresAt },
          toOtpIssued({
            id,
            subject: req.subject,
            userId: req.userId,
            purpose: req.purpose,
            channel: req.channel,
            destination: req.destination,
            code,
            issuedAt: s.now,
            expiresAt,
          }),
        );
        log.info({ codeId: id, purpose: req.purpose, channel: req.channel }, "code issued");
        const resendAt = nextIssueAt({
          count: issues.count + 1,
          oldest: issues.oldest ?? s.now,
          newest: s.now,
        });
        return toIssueResponse(expiresAt, resendAt);
      });
    },

    async verify(req) {
      const outcome = await store.withKey(req.subject, req.purpose, async (s): Promise<VerifyOutcome> => {
        const now = s.now.getTime();
        const failures = await s.failuresSince(new Date(now - windowMs));
        if (failures.count >= policy.maxFailures) {
          return { kind: "locked", retryAfterMs: (failures.oldest?.getTime() ?? now) + windowMs - now };
        }
        const code = await s.code();
        if (!code || code.expiresAt.getTime() <= now) return { kind: "no-code" };
        if (code.attempts >= policy.maxAttempts) {
          // Dead: the way forward is a new code, once one may be issued.
          return { kind: "locked", retryAfterMs: nextIssueAt(await issuesOfLastHour(s)).getTime() - now };
        }
        const given = hashCode(policy.hashKey, req.subject, req.purpose, req.code);
        if (timingSafeEqual(given, code.hash)) {
          await s.deleteCode(code.id);
          return { kind: "verified" };
        }
        const attempts = await s.recordFailure(code.id);
        const attemptsLeft = Math.min(policy.maxAttempts - attempts, policy.maxFailures - failures.count - 1);
        if (attemptsLeft <= 0)
          log.warn({ codeId: code.id, purpose: req.purpose }, "code locked after wrong tries");
        return { kind: "wrong-code", attemptsLeft: Math.max(0, attemptsLeft) };
      });
      return toVerifyResponse(outcome);
    },
  };
}
