import { UserDeletedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { consumer } from "@protomesh/platform";
import type { UserStore } from "../pg-user-store.ts";

/** Forgets a deleted account's profile and roles, once per event (deleting twice is harmless too). */
export function createAccountDeletions(store: UserStore) {
  return consumer({
    durable: "user-account-deletions",
    event: UserDeletedSchema,
    async handle(event, _meta, tx) {
      await store.remove(tx, event.userId);
    },
  });
}
