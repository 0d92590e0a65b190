import { UserDeletedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { consumer } from "@protomesh/platform";
import type { ChatStore } from "../pg-chat-store.ts";

/**
 * Forgets a deleted account: its messages are deleted and its conversations disappear for it
 * (its peers keep their own messages). Once per event; a repeat finds nothing more to do.
 */
export function createAccountDeletions(store: ChatStore) {
  return consumer({
    durable: "chat-account-deletions",
    event: UserDeletedSchema,
    async handle(event, _meta, tx) {
      await store.deleteUser(tx, event.userId);
    },
  });
}
