import { create } from "@bufbuild/protobuf";
import { NotificationAddedSchema } from "@protomesh/contracts/notify/v1/events_pb";
import {
  type WatchMyNotificationsResponse,
  WatchMyNotificationsResponseSchema,
} from "@protomesh/contracts/notify/v1/notify_pb";
import { type Hub, sharedResponse, subscription } from "@protomesh/platform";

/**
 * Every replica hears of every new notification and hands it to the WatchMyNotifications
 * streams it has open for that user, whichever replica sent it.
 */
export function createInboxFanout(inbox: Hub<WatchMyNotificationsResponse>) {
  return subscription({
    name: "notify-inbox-fanout",
    event: NotificationAddedSchema,
    handle(event) {
      // One response for all the user's streams, encoded once.
      const { notification } = event;
      if (notification)
        inbox.publish(
          event.userId,
          sharedResponse(create(WatchMyNotificationsResponseSchema, { notification })),
        );
    },
  });
}
