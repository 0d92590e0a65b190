// Domain ↔ protobuf for otp: the only place that builds otp's messages.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { OtpIssuedSchema } from "@protomesh/contracts/otp/v1/events_pb";
import {
  type Channel,
  type IssueResponseSchema,
  type Purpose,
  type VerifyResponseSchema,
  VerifyResult,
} from "@protomesh/contracts/otp/v1/otp_pb";

/** A code that was just issued, with what notify needs to deliver it. */
export interface IssuedCode {
  id: string;
  subject: string;
  userId: string;
  purpose: Purpose;
  channel: Channel;
  destination: string;
  code: string;
  issuedAt: Date;
  expiresAt: Date;
}

/** The outcome of one Verify. */
export type VerifyOutcome =
  | { kind: "verified" }
  | { kind: "wrong-code"; attemptsLeft: number }
  | { kind: "no-code" }
  | { kind: "locked"; retryAfterMs: number };

/** OtpIssued: the only message that ever carries the code. */
export function toOtpIssued(c: IssuedCode): MessageInitShape<typeof OtpIssuedSchema> {
  return {
    codeId: c.id,
    subject: c.subject,
    userId: c.userId,
    purpose: c.purpose,
    channel: c.channel,
    destination: c.destination,
    code: c.code,
    expireTime: timestampFromDate(c.expiresAt),
    occurTime: timestampFromDate(c.issuedAt),
  };
}

/** Issue's answer: never the code, only when it expires and when another may be asked for. */
export function toIssueResponse(
  expiresAt: Date,
  resendAt: Date,
): MessageInitShape<typeof IssueResponseSchema> {
  return { expireTime: timestampFromDate(expiresAt), resendTime: timestampFromDate(resendAt) };
}

/** Verify's answer. */
export function toVerifyResponse(o: VerifyOutcome): MessageInitShape<typeof VerifyResponseSchema> {
  switch (o.kind) {
    case "verified":
      return { result: VerifyResult.VERIFIED };
    case "wrong-code":
      return { result: VerifyResult.WRONG_CODE, attemptsLeft: o.attemptsLeft };
    case "no-code":
      return { result: VerifyResult.NO_CODE };
    case "locked":
      return {
        result: VerifyResult.LOCKED,
        retryDelay: durationFromMs(Math.max(0, Math.ceil(o.retryAfterMs))),
      };
  }
}
