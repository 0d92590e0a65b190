import { MessageSentSchema } from "@protomesh/contracts/chat/v1/events_pb";
import type { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { consumer, type ServiceClient, unlessNotFound } from "@protomesh/platform";
import { type ConsumerDeps, deliverEmail } from "../delivery.ts";
import { chatMessageEmail } from "../templates.ts";

/** A user's address and name, or undefined once the account is gone. */
const contactOf = (users: Pick<ServiceClient<typeof UserService>, "getContact">, userId: string) =>
  unlessNotFound(users.getContact({ userId }));

/**
 * Emails the recipient of a chat message when they were offline as it was sent: decided
 * `delayMs` after the message (a message read by then sends nothing), and at most one email per
 * conversation per quiet period, so a burst of 50 messages is one email. The CHAT stream is
 * chat's: this consumer binds once chat has declared it.
 */
export function createChatMessageEmails(
  deps: ConsumerDeps & {
    users: Pick<ServiceClient<typeof UserService>, "getContact">;
    delayMs: number;
    quietS: number;
  },
) {
  return consumer({
    durable: "notify-chat-message-emails",
    event: MessageSentSchema,
    // One conversation's messages in order, so the first of a burst claims its email.
    orderKey: (e) => e.conversationId,
    delayMs: deps.delayMs,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    async handle(event, meta, tx) {
      // An event written before MessageSent lost the text carries none of the ids: no email.
      if (event.recipientOnline || !event.conversationId || !event.senderId) return;
      const mark = { userId: event.recipientId, conversationId: event.conversationId };
      if (await deps.store.chatIsRead(tx, { ...mark, position: event.position })) return;
      const claim = { ...mark, senderId: event.senderId, quietS: deps.quietS };
      if (!(await deps.store.claimChatEmail(tx, claim))) return;
      const to = await contactOf(deps.users, event.recipientId);
      if (!to) return;
      // A sender deleted since (its tombstone not here yet): their message is gone, so is the email.
      const from = await contactOf(deps.users, event.senderId);
      if (!from) return;
      await deliverEmail(
        deps,
        tx,
        event.recipientId,
        chatMessageEmail(to, from.displayName, meta.eventId),
        meta.eventId,
      );
    },
  });
}
