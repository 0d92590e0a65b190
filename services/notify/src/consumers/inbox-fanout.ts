import { NotificationAddedSchema } from "@protomesh/contracts/notify/v1/events_pb";
import type { Notification } from "@protomesh/contracts/notify/v1/notify_pb";
import { type Hub, subscription } from "@protomesh/platform";

/**
 * Every replica hears of every new notification and hands it to the WatchMyNotifications
 * streams it has open for that user, whichever replica sent it.
 */
export function createInboxFanout(inbox: Hub<Notification>) {
  return subscription({
    name: "notify-inbox-fanout",
    event: NotificationAddedSchema,
    handle(event) {
      if (event.notification) inbox.publish(event.userId, event.notification);
    },
  });
}
