import { randomUUID } from "node:crypto";
import type { NotifyService, WatchMyNotificationsResponse } from "@protomesh/contracts/notify/v1/notify_pb";
import {
  type CallContext,
  Code,
  ConnectError,
  fail,
  type Hub,
  requireUser,
  type ServiceHandlers,
} from "@protomesh/platform";
import { fromPageToken, toNotificationMessage, toPageToken } from "./convert.ts";
import type { Mailer } from "./mailer.ts";
import type { NotificationStore } from "./pg-notification-store.ts";
import { SmsNotConfiguredError, type SmsProvider } from "./sms.ts";
import { clean, plainEmail } from "./templates.ts";

/** NotifyService handlers. `inbox` carries new notifications to the streams open on this replica. */
export function createNotifyHandlers(deps: {
  store: NotificationStore;
  inbox: Hub<WatchMyNotificationsResponse>;
  mailer: Mailer;
  sms: SmsProvider;
}): ServiceHandlers<typeof NotifyService> {
  const { store, inbox } = deps;

  /**
   * Sends now; with a user, the inbox row and the send share a transaction (no row for a message
   * that did not go out). What the server or provider refused becomes UNAVAILABLE: retry.
   */
  const sendNow = async (
    ctx: CallContext,
    row: { userId: string; channel: "email" | "sms"; kind: string; subject: string },
    send: (id: string) => Promise<void>,
  ): Promise<{ notificationId: string }> => {
    const id = randomUUID();
    try {
      if (!row.userId) {
        await send(id);
        return { notificationId: id };
      }
      const record = await store.addAndSend({ ...row, eventId: `request:${ctx.requestId}` }, () => send(id));
      if (!record) throw fail(Code.FailedPrecondition, "user_id: the account was deleted; nothing was sent");
      return { notificationId: record.id };
    } catch (err) {
      if (err instanceof ConnectError) throw err;
      if (err instanceof SmsNotConfiguredError) throw fail(Code.FailedPrecondition, err.message);
      // The cause names the server's answer or the network error, never the message.
      ctx.log.warn({ err, channel: row.channel }, "send refused");
      throw fail(
        Code.Unavailable,
        `the ${row.channel === "email" ? "mail server" : "SMS provider"} did not take the message; retry`,
      );
    }
  };

  return {
    async listMyNotifications(req, ctx) {
      const me = requireUser(ctx);
      const { items, more } = await store.list(me.userId, req.pageSize || 20, fromPageToken(req.pageToken));
      const last = items.at(-1);
      return {
        notifications: items.map(toNotificationMessage),
        nextPageToken: more && last ? toPageToken(last) : "",
      };
    },

    // The hub's own iterator, not one wrapped in another generator: a burst to many streams
    // pays every hop once per stream.
    watchMyNotifications: (_req, ctx) => inbox.listen(requireUser(ctx).userId, ctx.signal),

    async sendEmail(req, ctx) {
      const subject = clean(req.subject, 200);
      return sendNow(ctx, { userId: req.userId, channel: "email", kind: req.kind, subject }, (id) =>
        deps.mailer.send(plainEmail(req.to, subject, req.text, id)),
      );
    },

    async sendSms(req, ctx) {
      // An SMS has no subject; the inbox shows its kind.
      return sendNow(
        ctx,
        { userId: req.userId, channel: "sms", kind: req.kind, subject: "Text message" },
        (id) => deps.sms.send(req.to, req.text, id),
      );
    },
  };
}
