import type { OtpService } from "@protomesh/contracts/otp/v1/otp_pb";
import { Channel, Purpose, VerifyResult } from "@protomesh/contracts/otp/v1/otp_pb";
import { Code, fail, retryLater, type ServiceClient } from "@protomesh/platform";

/** The answer for a wrong, expired or never-issued code. */
export const WRONG_CODE = "code: wrong or expired code";

/** Maps an otp Verify outcome to success or the error the caller gets. */
export function checkOtpResult(res: {
  result: VerifyResult;
  retryDelay?: { seconds: bigint; nanos: number } | undefined;
}): void {
  switch (res.result) {
    case VerifyResult.VERIFIED:
      return;
    case VerifyResult.LOCKED: {
      const ms = res.retryDelay ? Number(res.retryDelay.seconds) * 1000 + res.retryDelay.nanos / 1e6 : 0;
      throw retryLater("too many wrong codes; ask for a new code later", ms);
    }
    default:
      throw fail(Code.InvalidArgument, WRONG_CODE);
  }
}

/** Email verification codes through OtpService (purpose VERIFY_EMAIL, sent by email). */
export function createEmailVerification(otp: ServiceClient<typeof OtpService>) {
  return {
    /** Issues a new code to the address; RESOURCE_EXHAUSTED from otp (cooldown) passes through. */
    async send(account: { userId: string; email: string }): Promise<void> {
      await otp.issue({
        subject: account.userId,
        purpose: Purpose.VERIFY_EMAIL,
        channel: Channel.EMAIL,
        destination: account.email,
        userId: account.userId,
      });
    },
    /** Checks a code; throws INVALID_ARGUMENT or RESOURCE_EXHAUSTED unless it is right. */
    async check(userId: string, code: string): Promise<void> {
      checkOtpResult(await otp.verify({ subject: userId, purpose: Purpose.VERIFY_EMAIL, code }));
    },
  };
}

export type EmailVerification = ReturnType<typeof createEmailVerification>;
