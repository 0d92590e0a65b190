import { OrderCancelledSchema } from "@protomesh/contracts/orders/v1/events_pb";
import { consumer } from "@protomesh/platform";
import { buyerKey, cancellerOf, toOrderView } from "../convert.ts";
import { type ConsumerDeps, deliverEmail } from "../delivery.ts";
import { orderCancelledEmail } from "../templates.ts";

/** Tells the buyer their order was cancelled, by whom, and why when a reason was given. */
export function createOrderCancelledEmails(deps: ConsumerDeps) {
  return consumer({
    durable: "notify-order-cancelled-emails",
    // One buyer's emails in the order they happened; different buyers in parallel.
    orderKey: buyerKey,
    event: OrderCancelledSchema,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    async handle(event, meta, tx) {
      const order = toOrderView(event.order, event.email);
      if (!order) return;
      const notice = orderCancelledEmail(
        { ...order, by: cancellerOf(event.cancelledBy), reason: event.order?.cancelReason ?? "" },
        meta.eventId,
      );
      await deliverEmail(deps, tx, event.order?.userId ?? "", notice, meta.eventId);
    },
  });
}
