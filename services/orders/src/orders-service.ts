import type { OrdersService } from "@protomesh/contracts/orders/v1/orders_pb";
import {
  Code,
  fail,
  type Logger,
  type PageTokens,
  requireUser,
  requireVerifiedEmail,
  type ServiceHandlers,
} from "@protomesh/platform";
import type { CatalogStock } from "./catalog-stock.ts";
import { fromStatus, toOrder } from "./convert.ts";
import { adminMove, buyerCancel, type OrderRecord } from "./order-model.ts";
import { ordersCancelled } from "./orders-metrics.ts";
import type { OrderStore } from "./pg-order-store.ts";
import type { Place } from "./placement.ts";

const DEFAULT_PAGE_SIZE = 20;

const notFound = () => fail(Code.NotFound, "order not found");

/** OrdersService handlers. */
export function createOrdersHandlers(deps: {
  store: OrderStore;
  stock: CatalogStock;
  place: Place;
  pageTokens: PageTokens;
  log: Logger;
}): ServiceHandlers<typeof OrdersService> {
  const { store, stock, place, pageTokens, log } = deps;

  /**
   * Returns a cancelled order's units once its cancellation is committed; if catalog cannot
   * be reached the sweeper does it later (the order says its stock is not released yet).
   */
  const releaseStock = async (order: OrderRecord) => {
    try {
      await stock.release(order.id);
      await store.recordRelease(order.id);
    } catch (err) {
      log.warn(
        { err, orderId: order.id },
        "could not release a cancelled order's stock yet; the sweeper will",
      );
    }
  };

  return {
    // Placing needs a verified email: the order's mails go to that address, and an address
    // nobody proved must not receive them (nor may a throwaway account hold stock).
    async placeOrder(req, ctx) {
      const order = await place(requireVerifiedEmail(ctx), req.lines, req.idempotencyKey);
      return { order: toOrder(order) };
    },

    async buyNow(req, ctx) {
      const lines = [{ productId: req.productId, quantity: req.quantity }];
      const order = await place(requireVerifiedEmail(ctx), lines, req.idempotencyKey);
      return { order: toOrder(order) };
    },

    async getOrder(req, ctx) {
      const order = await store.getOwned(req.orderId, requireUser(ctx).userId);
      if (!order) throw notFound();
      return { order: toOrder(order) };
    },

    async listMyOrders(req, ctx) {
      const userId = requireUser(ctx).userId;
      // The token is bound to its user: nobody pages through another's orders with it.
      const scope = `mine\0${userId}`;
      const page = await store.list(
        { userId },
        req.pageSize || DEFAULT_PAGE_SIZE,
        pageTokens.cursorOf(scope, req.pageToken),
      );
      return { orders: page.items.map(toOrder), nextPageToken: pageTokens.tokenFor(scope, page.next) };
    },

    async cancelOrder(req, ctx) {
      const result = await store.change(req.orderId, requireUser(ctx).userId, (o) =>
        buyerCancel(o, req.reason),
      );
      if (!result) throw notFound();
      if (result.changed) {
        ordersCancelled.inc({ by: "buyer" });
        await releaseStock(result.order);
      }
      return { order: toOrder(result.order) };
    },

    async updateOrderStatus(req, _ctx) {
      // Validation refuses UNSPECIFIED, so there is always a status to move to.
      const to = fromStatus(req.status);
      if (!to) throw fail(Code.InvalidArgument, "status: must be a status an order can have");
      const result = await store.change(req.orderId, undefined, (o) => adminMove(o, to, req.reason));
      if (!result) throw notFound();
      if (result.changed && to === "cancelled") {
        ordersCancelled.inc({ by: "admin" });
        await releaseStock(result.order);
      }
      return { order: toOrder(result.order) };
    },

    async listOrders(req) {
      const filter = { userId: req.userId || undefined, status: fromStatus(req.status) };
      const scope = `all\0${filter.userId ?? ""}\0${filter.status ?? ""}`;
      const page = await store.list(
        filter,
        req.pageSize || DEFAULT_PAGE_SIZE,
        pageTokens.cursorOf(scope, req.pageToken),
      );
      return { orders: page.items.map(toOrder), nextPageToken: pageTokens.tokenFor(scope, page.next) };
    },
  };
}
