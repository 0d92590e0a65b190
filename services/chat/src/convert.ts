// Domain ↔ protobuf for chat: the only place that builds chat's messages.
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type ConversationSchema,
  type MessageSchema,
  SubscribeResponseSchema,
} from "@protomesh/contracts/chat/v1/chat_pb";
import type { MessageSentSchema, MessagesReadSchema } from "@protomesh/contracts/chat/v1/events_pb";

/** A stored message. */
export interface MessageRecord {
  id: string;
  conversationId: string;
  /** Its place in the conversation (and among all messages): read marks compare against it. */
  position: bigint;
  senderId: string;
  text: string;
  clientMessageId: string;
  createdAt: Date;
}

/** A conversation as one of its people sees it. */
export interface ConversationRecord {
  id: string;
  /** "" once the other person deleted their account. */
  peerId: string;
  lastMessage: MessageRecord | undefined;
  unread: number;
}

/** A read mark as both people's streams see it. */
export interface ReadRecord {
  conversationId: string;
  readerId: string;
  messageId: string;
  position: bigint;
  readAt: Date;
}

/** A message as clients see it. */
export const toMessage = (m: MessageRecord): MessageInitShape<typeof MessageSchema> => ({
  id: m.id,
  conversationId: m.conversationId,
  senderId: m.senderId,
  text: m.text,
  clientMessageId: m.clientMessageId,
  createTime: timestampFromDate(m.createdAt),
});

/** A conversation as clients see it. */
export const toConversation = (c: ConversationRecord): MessageInitShape<typeof ConversationSchema> => ({
  id: c.id,
  peerId: c.peerId,
  ...(c.lastMessage ? { lastMessage: toMessage(c.lastMessage) } : {}),
  unreadCount: c.unread,
});

/** A user's event, as Subscribe sends it and the event log stores it. */
export function encodeEvent(seq: bigint, event: MessageRecord | ReadRecord): Uint8Array {
  const body =
    "text" in event
      ? { case: "message" as const, value: toMessage(event) }
      : {
          case: "read" as const,
          value: {
            conversationId: event.conversationId,
            readerId: event.readerId,
            messageId: event.messageId,
            readTime: timestampFromDate(event.readAt),
          },
        };
  return toBinary(SubscribeResponseSchema, create(SubscribeResponseSchema, { seq, event: body }));
}

/** MessageSent for notify. */
export const toMessageSent = (
  m: MessageRecord,
  recipientId: string,
  recipientOnline: boolean,
): MessageInitShape<typeof MessageSentSchema> => ({
  messageId: m.id,
  conversationId: m.conversationId,
  senderId: m.senderId,
  recipientId,
  position: m.position,
  recipientOnline,
  occurTime: timestampFromDate(m.createdAt),
});

/** MessagesRead for notify. */
export const toMessagesRead = (r: ReadRecord): MessageInitShape<typeof MessagesReadSchema> => ({
  conversationId: r.conversationId,
  readerId: r.readerId,
  position: r.position,
  occurTime: timestampFromDate(r.readAt),
});

/** A user's newest seq, as a notice a stream compares with the last seq it sent. */
export const encodeHead = (seq: bigint): Uint8Array =>
  toBinary(
    SubscribeResponseSchema,
    create(SubscribeResponseSchema, { seq, event: { case: "heartbeat", value: {} } }),
  );
