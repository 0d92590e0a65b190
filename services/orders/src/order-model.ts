// Orders in domain terms: statuses, the moves between them, and who may make which.
import { Code, fail } from "@protomesh/platform";

/** An order's status. A draft is internal: its stock is being reserved; nobody sees it. */
export type OrderState = "draft" | "pending" | "confirmed" | "shipped" | "delivered" | "cancelled";

/** Where an order's units stand in catalog. */
export type StockState = "reserved" | "committed" | "released";

/** Who cancelled an order, as OrderCancelled says it. */
export type CancelledBy = "buyer" | "admin" | "system";

/** One line of a placed order, priced as it was when placed. */
export interface OrderLineRecord {
  productId: string;
  name: string;
  quantity: number;
  unitPriceMinor: bigint;
  lineTotalMinor: bigint;
}

/** A stored order (never a draft, outside the store). */
export interface OrderRecord {
  id: string;
  /** "" once the buyer deleted their account. */
  userId: string;
  /** The buyer's address when they ordered; "" once anonymised. */
  email: string;
  status: OrderState;
  stock: StockState;
  lines: OrderLineRecord[];
  currency: string;
  totalMinor: bigint;
  cancelReason: string;
  cancelledBy: CancelledBy | "";
  createdAt: Date;
  updatedAt: Date;
}

/** A change of status, with what a cancellation records. */
export interface Move {
  to: OrderState;
  reason?: string;
  by?: CancelledBy;
  /** The stock state the move leaves behind, when it settles it at once. */
  stock?: StockState;
}

/** The moves the state machine allows (an admin may make any of them; a buyer only cancels). */
const NEXT: Record<OrderState, readonly OrderState[]> = {
  draft: [],
  pending: ["confirmed", "cancelled"],
  confirmed: ["shipped", "cancelled"],
  shipped: ["delivered"],
  delivered: [],
  cancelled: [],
};

/** Statuses in which an order can still be cancelled and its stock go back. */
export const CANCELLABLE: readonly OrderState[] = (Object.keys(NEXT) as OrderState[]).filter((s) =>
  NEXT[s].includes("cancelled"),
);

/** The status as the contract spells it in messages, e.g. "SHIPPED". */
export const statusName = (s: OrderState) => s.toUpperCase();

/** The reason recorded when catalog no longer holds a placed order's stock. */
export const EXPIRED_REASON = "stock reservation expired";
/** The reason recorded when the buyer's account was deleted while an order was open. */
export const ACCOUNT_DELETED_REASON = "the buyer's account was deleted";

/** The buyer's cancellation: nothing to do when already cancelled; refused once shipped. */
export function buyerCancel(order: OrderRecord, reason: string): Move | undefined {
  if (order.status === "cancelled") return undefined;
  if (!CANCELLABLE.includes(order.status)) {
    throw fail(Code.FailedPrecondition, `cannot cancel an order that is ${statusName(order.status)}`);
  }
  return { to: "cancelled", reason: reason || "cancelled by the buyer", by: "buyer" };
}

/**
 * An admin's move: the same status is a no-op; anything the state machine does not allow is
 * refused naming both statuses. An order ships only once its stock is committed in catalog,
 * so goods never leave for an order whose reservation could still expire.
 */
export function adminMove(order: OrderRecord, to: OrderState, reason: string): Move | undefined {
  if (order.status === to) return undefined;
  if (!NEXT[order.status].includes(to)) {
    throw fail(
      Code.FailedPrecondition,
      `cannot move an order from ${statusName(order.status)} to ${statusName(to)}`,
    );
  }
  if (to === "shipped" && order.stock !== "committed") {
    throw fail(
      Code.FailedPrecondition,
      "cannot ship the order yet: catalog has not committed its stock; try again shortly",
    );
  }
  return to === "cancelled" ? { to, reason: reason || "cancelled by the shop", by: "admin" } : { to };
}
