import { OrderPlacedSchema } from "@protomesh/contracts/orders/v1/events_pb";
import { consumer } from "@protomesh/platform";
import { buyerKey, toOrderView } from "../convert.ts";
import { type ConsumerDeps, deliverEmail } from "../delivery.ts";
import { orderPlacedEmail } from "../templates.ts";

/**
 * The buyer's confirmation of a placed order: its lines and total. An anonymised order (its buyer
 * deleted the account) has nobody to write to and sends nothing. The ORDERS stream is the orders
 * service's: this consumer binds once orders has declared it.
 */
export function createOrderPlacedEmails(deps: ConsumerDeps) {
  return consumer({
    durable: "notify-order-placed-emails",
    // One buyer's emails in the order they happened; different buyers in parallel.
    orderKey: buyerKey,
    event: OrderPlacedSchema,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    async handle(event, meta, tx) {
      const order = toOrderView(event.order, event.email);
      if (!order) return;
      await deliverEmail(
        deps,
        tx,
        event.order?.userId ?? "",
        orderPlacedEmail(order, meta.eventId),
        meta.eventId,
      );
    },
  });
}
