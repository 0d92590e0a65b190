// Domain ↔ protobuf for orders: the only place that builds orders' messages.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ReservedLine } from "@protomesh/contracts/catalog/v1/catalog_pb";
import type {
  OrderCancelledSchema,
  OrderPlacedSchema,
  OrderStatusChangedSchema,
} from "@protomesh/contracts/orders/v1/events_pb";
import { type OrderSchema, OrderStatus } from "@protomesh/contracts/orders/v1/orders_pb";
import type { CancelledBy, OrderLineRecord, OrderRecord, OrderState } from "./order-model.ts";

const TO_PROTO: Record<OrderState, OrderStatus> = {
  draft: OrderStatus.UNSPECIFIED,
  pending: OrderStatus.PENDING,
  confirmed: OrderStatus.CONFIRMED,
  shipped: OrderStatus.SHIPPED,
  delivered: OrderStatus.DELIVERED,
  cancelled: OrderStatus.CANCELLED,
};

/** The contract's status of a domain status. */
export const toStatus = (s: OrderState): OrderStatus => TO_PROTO[s];

/** The domain status of a contract status; undefined for UNSPECIFIED (no filter, no move). */
export function fromStatus(s: OrderStatus): OrderState | undefined {
  const found = (Object.entries(TO_PROTO) as [OrderState, OrderStatus][]).find(
    ([state, proto]) => proto === s && state !== "draft",
  );
  return found?.[0];
}

const money = (currency: string, amountMinor: bigint) => ({ currency, amountMinor });

/** An order as its buyer, an admin and the events see it. */
export function toOrder(o: OrderRecord): MessageInitShape<typeof OrderSchema> {
  return {
    id: o.id,
    userId: o.userId,
    status: toStatus(o.status),
    lines: o.lines.map((l) => ({
      productId: l.productId,
      name: l.name,
      quantity: l.quantity,
      unitPrice: money(o.currency, l.unitPriceMinor),
      lineTotal: money(o.currency, l.lineTotalMinor),
    })),
    total: money(o.currency, o.totalMinor),
    cancelReason: o.cancelReason,
    createTime: timestampFromDate(o.createdAt),
    updateTime: timestampFromDate(o.updatedAt),
  };
}

/** A reserved line as an order line, with the currency its price is in. */
export function fromReservedLine(l: ReservedLine): { currency: string; line: OrderLineRecord } {
  const unit = l.unitPrice?.amountMinor ?? 0n;
  return {
    currency: l.unitPrice?.currency ?? "",
    line: {
      productId: l.productId,
      name: l.name,
      quantity: l.quantity,
      unitPriceMinor: unit,
      lineTotalMinor: unit * BigInt(l.quantity),
    },
  };
}

/** OrderPlaced: the order as placed, and the buyer's address for the confirmation. */
export function toOrderPlaced(o: OrderRecord): MessageInitShape<typeof OrderPlacedSchema> {
  return { order: toOrder(o), email: o.email, occurTime: timestampFromDate(o.updatedAt) };
}

/** What every status event says: the order now, its status before, and where to write. */
const statusEvent = (o: OrderRecord, previous: OrderState) => ({
  order: toOrder(o),
  previousStatus: toStatus(previous),
  email: o.email,
  occurTime: timestampFromDate(o.updatedAt),
});

/** OrderStatusChanged: an admin moved the order forward. */
export function toOrderStatusChanged(
  o: OrderRecord,
  previous: OrderState,
): MessageInitShape<typeof OrderStatusChangedSchema> {
  return statusEvent(o, previous);
}

/** OrderCancelled, with who cancelled ("buyer", "admin" or "system"). */
export function toOrderCancelled(
  o: OrderRecord,
  previous: OrderState,
  by: CancelledBy,
): MessageInitShape<typeof OrderCancelledSchema> {
  return { ...statusEvent(o, previous), cancelledBy: by };
}
