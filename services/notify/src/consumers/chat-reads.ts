import { MessagesReadSchema } from "@protomesh/contracts/chat/v1/events_pb";
import { consumer } from "@protomesh/platform";
import type { ConsumerDeps } from "../delivery.ts";

/** Remembers how far each person read each conversation: a read message sends no email. */
export function createChatReads(deps: ConsumerDeps) {
  return consumer({
    durable: "notify-chat-reads",
    event: MessagesReadSchema,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    async handle(event, _meta, tx) {
      await deps.store.chatRead(tx, {
        userId: event.readerId,
        conversationId: event.conversationId,
        position: event.position,
      });
    },
  });
}
