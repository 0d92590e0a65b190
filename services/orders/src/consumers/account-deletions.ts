import { UserDeletedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { consumer } from "@protomesh/platform";
import { ordersCancelled } from "../orders-metrics.ts";
import type { OrderStore } from "../pg-order-store.ts";

/**
 * Anonymises a deleted account's orders (the shop keeps lines and totals, not who bought) and
 * cancels its open ones; the stock sweeper returns their units. Once per event; a repeat, or
 * an unknown user, finds nothing to do.
 */
export function createAccountDeletions(store: OrderStore) {
  return consumer({
    durable: "orders-account-deletions",
    event: UserDeletedSchema,
    async handle(event, _meta, tx) {
      ordersCancelled.inc({ by: "system" }, await store.anonymise(tx, event.userId));
    },
  });
}
