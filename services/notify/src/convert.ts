// Domain ↔ protobuf for notify: the only place that builds notify's messages and page tokens.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { MfaMethod } from "@protomesh/contracts/auth/v1/auth_pb";
import { Channel, type NotificationSchema } from "@protomesh/contracts/notify/v1/notify_pb";
import type { OtpIssued } from "@protomesh/contracts/otp/v1/events_pb";
import { Channel as OtpChannel, Purpose } from "@protomesh/contracts/otp/v1/otp_pb";
import { Code, fail } from "@protomesh/platform";
import type { InboxCursor, NotificationRecord } from "./pg-notification-store.ts";
import type { CodeMessage, CodePurpose, MfaKind } from "./templates.ts";

/** One inbox entry. */
export function toNotificationMessage(n: NotificationRecord): MessageInitShape<typeof NotificationSchema> {
  return {
    id: n.id,
    channel: n.channel === "email" ? Channel.EMAIL : Channel.SMS,
    kind: n.kind,
    subject: n.subject,
    createTime: timestampFromDate(n.createdAt),
  };
}

/** An opaque page token for the page after this row. */
export const toPageToken = (c: InboxCursor) =>
  Buffer.from(`${c.createdAt.toISOString()}|${c.id}`).toString("base64url");

/** The cursor inside a page token; INVALID_ARGUMENT for anything this service did not issue. */
export function fromPageToken(token: string): InboxCursor | undefined {
  if (!token) return undefined;
  const [at, id] = Buffer.from(token, "base64url").toString("utf8").split("|");
  const createdAt = new Date(at ?? "");
  if (!id || !/^[0-9a-f-]{36}$/.test(id) || Number.isNaN(createdAt.getTime())) {
    throw fail(Code.InvalidArgument, "page_token: not a token this service issued");
  }
  return { createdAt, id };
}

/** An event's time, or `fallback` (when JetStream stored it) for an event that carries none. */
export const dateOf = (ts: Timestamp | undefined, fallback: Date) => (ts ? timestampDate(ts) : fallback);

const PURPOSES: Partial<Record<Purpose, CodePurpose>> = {
  [Purpose.VERIFY_EMAIL]: "verify_email",
  [Purpose.SIGN_IN]: "sign_in",
  [Purpose.RESET_PASSWORD]: "reset_password",
  [Purpose.ENABLE_MFA]: "enable_mfa",
  [Purpose.STEP_UP]: "step_up",
};

/** The code of an OtpIssued as a message to send, and where it goes. */
export function toCodeMessage(
  e: OtpIssued,
  stored: Date,
): CodeMessage & { channel: "email" | "sms"; expiresAt: Date } {
  const issued = dateOf(e.occurTime, stored);
  // A code with no expiry in its event is treated as expiring at once: never sent.
  const expiresAt = e.expireTime ? timestampDate(e.expireTime) : issued;
  return {
    // A purpose newer than this service still reaches the person, with generic words.
    purpose: PURPOSES[e.purpose] ?? "other",
    code: e.code,
    minutes: Math.max(1, Math.round((expiresAt.getTime() - issued.getTime()) / 60_000)),
    channel: e.channel === OtpChannel.SMS ? "sms" : "email",
    expiresAt,
  };
}

const MFA_KINDS: Partial<Record<MfaMethod, MfaKind>> = {
  [MfaMethod.EMAIL]: "email",
  [MfaMethod.TOTP]: "totp",
  [MfaMethod.RECOVERY_CODE]: "recovery_code",
};

/** How an email names a second factor. */
export const mfaKindOf = (m: MfaMethod): MfaKind => MFA_KINDS[m] ?? "other";
