import { OrderStatusChangedSchema } from "@protomesh/contracts/orders/v1/events_pb";
import { consumer } from "@protomesh/platform";
import { buyerKey, orderStageOf, toOrderView } from "../convert.ts";
import { type ConsumerDeps, deliverEmail } from "../delivery.ts";
import { orderStatusEmail } from "../templates.ts";

/**
 * Tells the buyer their order was confirmed, shipped or delivered. Other statuses send nothing
 * (a cancellation has its own event and email), and so does an anonymised order.
 */
export function createOrderStatusEmails(deps: ConsumerDeps) {
  return consumer({
    durable: "notify-order-status-emails",
    // One buyer's emails in the order they happened; different buyers in parallel.
    orderKey: buyerKey,
    event: OrderStatusChangedSchema,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    async handle(event, meta, tx) {
      const order = toOrderView(event.order, event.email);
      const stage = event.order && orderStageOf(event.order.status);
      if (!order || !stage) return;
      const notice = orderStatusEmail(order, stage, meta.eventId);
      await deliverEmail(deps, tx, event.order?.userId ?? "", notice, meta.eventId);
    },
  });
}
