// Domain ↔ protobuf for notify: the only place that builds notify's messages and page tokens.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Channel, type NotificationSchema } from "@protomesh/contracts/notify/v1/notify_pb";
import { Code, fail } from "@protomesh/platform";
import type { InboxCursor, NotificationRecord } from "./pg-notification-store.ts";

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
