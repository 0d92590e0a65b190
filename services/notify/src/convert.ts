// Domain ↔ protobuf for notify: the only place that builds notify's messages and page tokens.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { MfaMethod } from "@protomesh/contracts/auth/v1/auth_pb";
import type { Money as MoneyMessage } from "@protomesh/contracts/catalog/v1/catalog_pb";
import { Channel, type NotificationSchema } from "@protomesh/contracts/notify/v1/notify_pb";
import { type Order, OrderStatus } from "@protomesh/contracts/orders/v1/orders_pb";
import type { OtpIssued } from "@protomesh/contracts/otp/v1/events_pb";
import { Channel as OtpChannel, Purpose } from "@protomesh/contracts/otp/v1/otp_pb";
import { Code, fail } from "@protomesh/platform";
import type { InboxCursor, NotificationRecord } from "./pg-notification-store.ts";
import type {
  Canceller,
  CodeMessage,
  CodePurpose,
  MfaKind,
  Money,
  OrderStage,
  OrderView,
} from "./templates.ts";

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

const moneyOf = (m: MoneyMessage | undefined): Money => ({
  currency: m?.currency ?? "",
  amountMinor: m?.amountMinor ?? 0n,
});

/**
 * The order of an orders event as its emails show it, or undefined when there is nobody to write
 * to: an order anonymised because its buyer deleted the account has no user id and no address.
 */
export function toOrderView(order: Order | undefined, email: string): OrderView | undefined {
  if (!order?.userId || !email) return undefined;
  return {
    id: order.id,
    email,
    lines: order.lines.map((l) => {
      const unitPrice = moneyOf(l.unitPrice);
      return {
        name: l.name,
        quantity: l.quantity,
        unitPrice,
        // Orders always sends it; computed in bigint, never floats, if a producer did not.
        lineTotal: l.lineTotal
          ? moneyOf(l.lineTotal)
          : { ...unitPrice, amountMinor: unitPrice.amountMinor * BigInt(l.quantity) },
      };
    }),
    total: moneyOf(order.total),
  };
}

/** Orders events keyed by buyer (an anonymised order, by itself): one buyer's emails keep their order. */
export const buyerKey = (e: { order?: Order | undefined }) => e.order?.userId || e.order?.id || "";

const STAGES: Partial<Record<OrderStatus, OrderStage>> = {
  [OrderStatus.CONFIRMED]: "confirmed",
  [OrderStatus.SHIPPED]: "shipped",
  [OrderStatus.DELIVERED]: "delivered",
};

/**
 * The stage an order moved to, or undefined for a status with no email of its own (a
 * cancellation is announced by OrderCancelled, not twice).
 */
export const orderStageOf = (s: OrderStatus): OrderStage | undefined => STAGES[s];

const CANCELLERS: Record<string, Canceller> = { buyer: "buyer", admin: "admin", system: "system" };

/** Who cancelled, from OrderCancelled's `cancelled_by`. */
export const cancellerOf = (by: string): Canceller => CANCELLERS[by] ?? "other";
