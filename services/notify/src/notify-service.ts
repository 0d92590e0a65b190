import type { Notification, NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { Code, fail, type Hub, requireUser, type ServiceHandlers } from "@protomesh/platform";
import { fromPageToken, toNotificationMessage, toPageToken } from "./convert.ts";
import type { NotificationStore } from "./pg-notification-store.ts";

/** NotifyService handlers. `inbox` carries new notifications to the streams open on this replica. */
export function createNotifyHandlers(
  store: NotificationStore,
  inbox: Hub<Notification>,
): ServiceHandlers<typeof NotifyService> {
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

    async *watchMyNotifications(_req, ctx) {
      const me = requireUser(ctx);
      for await (const notification of inbox.listen(me.userId, ctx.signal)) yield { notification };
    },

    // Built in the identity issue (in progress).
    sendEmail: notYet,
    sendSms: notYet,
  };
}

const notYet = async (): Promise<never> => {
  throw fail(Code.Unimplemented, "not implemented yet");
};
