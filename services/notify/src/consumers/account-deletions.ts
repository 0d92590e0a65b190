import { UserDeletedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { consumer } from "@protomesh/platform";
import { dateOf } from "../convert.ts";
import type { ConsumerDeps } from "../delivery.ts";
import { accountDeletedEmail } from "../templates.ts";

/**
 * Forgets a deleted user (every inbox row) and confirms the deletion to the address the event
 * carries, without keeping a row: nothing of the user stays here. Deletion and send share the
 * transaction, so a failed send is retried with the rows still to delete.
 */
export function createAccountDeletions(deps: ConsumerDeps) {
  return consumer({
    durable: "notify-account-deletions",
    // One user's messages in the order they happened; different users in parallel.
    orderKey: (e) => e.userId,
    event: UserDeletedSchema,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    async handle(event, meta, tx) {
      await deps.store.deleteUser(tx, event.userId);
      if (event.email) {
        await deps.mailer.send(
          accountDeletedEmail({ email: event.email, at: dateOf(event.occurTime, meta.time) }, meta.eventId),
        );
      }
    },
  });
}
