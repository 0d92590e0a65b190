import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Channel, type NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { Code, fail, requireUser, type ServiceHandlers } from "@protomesh/platform";
import type { InboxCursor, NotificationStore } from "./pg-notification-store.ts";

const encodeCursor = (c: InboxCursor) =>
  Buffer.from(`${c.createdAt.toISOString()}|${c.id}`).toString("base64url");

function decodeCursor(token: string): InboxCursor | undefined {
  if (!token) return undefined;
  const [at, id] = Buffer.from(token, "base64url").toString("utf8").split("|");
  const createdAt = new Date(at ?? "");
  if (!id || !/^[0-9a-f-]{36}$/.test(id) || Number.isNaN(createdAt.getTime())) {
    throw fail(Code.InvalidArgument, "page_token: not a token this service issued");
  }
  return { createdAt, id };
}

/** NotifyService handlers. */
export function createNotifyHandlers(store: NotificationStore): ServiceHandlers<typeof NotifyService> {
  return {
    async listMyNotifications(req, ctx) {
      const me = requireUser(ctx);
      const { items, more } = await store.list(me.userId, req.pageSize || 20, decodeCursor(req.pageToken));
      const last = items.at(-1);
      return {
        notifications: items.map((n) => ({
          id: n.id,
          channel: n.channel === "email" ? Channel.EMAIL : Channel.SMS,
          kind: n.kind,
          subject: n.subject,
          createTime: timestampFromDate(n.createdAt),
        })),
        nextPageToken: more && last ? encodeCursor(last) : "",
      };
    },
  };
}
