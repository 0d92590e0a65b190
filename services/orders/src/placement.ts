import { createHash, randomUUID } from "node:crypto";
import { Code, ConnectError, fail, type Logger, type UserIdentity } from "@protomesh/platform";
import { type CatalogStock, isRefusal, isUnreachable } from "./catalog-stock.ts";
import { fromReservedLine } from "./convert.ts";
import type { OrderLineRecord, OrderRecord } from "./order-model.ts";
import { ordersPlaced, ordersRefused } from "./orders-metrics.ts";
import type { OrderStore } from "./pg-order-store.ts";

/** Test hooks: a place in the flow where a test can make the service crash. */
export interface PlacementHooks {
  /** Runs once catalog reserved an order's stock, before the order is stored. */
  afterReserve?: (orderId: string) => Promise<void>;
}

/** One requested line. */
export interface LineRequest {
  productId: string;
  quantity: number;
}

/** The request's lines in a canonical form: the same lines in any order give the same print. */
export function fingerprintOf(lines: LineRequest[]): string {
  const canonical = lines
    .map((l) => `${l.productId.toLowerCase()}:${l.quantity}`)
    .sort()
    .join(",");
  return createHash("sha256").update(canonical).digest("hex");
}

/** INVALID_ARGUMENT naming the line when a product is listed twice. */
function refuseDuplicates(lines: LineRequest[]): void {
  const seen = new Set<string>();
  for (const [i, l] of lines.entries()) {
    const id = l.productId.toLowerCase();
    if (seen.has(id)) {
      throw fail(Code.InvalidArgument, `lines[${i}].product_id: product ${id} is listed more than once`);
    }
    seen.add(id);
  }
}

const REFUSAL_REASON: Partial<Record<Code, string>> = {
  [Code.FailedPrecondition]: "out_of_stock",
  [Code.NotFound]: "not_found",
  [Code.InvalidArgument]: "invalid",
};

/**
 * PlaceOrder and BuyNow: open (or find) the draft of the user's idempotency key, reserve its
 * stock in catalog under the draft's id, then store the priced order and OrderPlaced in one
 * transaction, and commit the stock. See the README for how each failure converges.
 */
export function createPlacement(deps: {
  store: OrderStore;
  stock: CatalogStock;
  log: Logger;
  hooks?: PlacementHooks;
}) {
  const { store, stock, log, hooks } = deps;

  /** Commits a placed order's stock; on failure the sweeper tries again. */
  const commit = async (order: OrderRecord) => {
    try {
      const outcome = await stock.commit(order.id);
      await store.recordCommit(order.id, outcome);
      if (outcome === "lost") log.warn({ orderId: order.id }, "catalog lost a new order's reservation");
    } catch (err) {
      log.warn({ err, orderId: order.id }, "could not commit an order's stock yet; the sweeper will");
    }
  };

  /** Undoes a reservation nobody will store; the sweeper and catalog's expiry back it up. */
  const abandon = async (orderId: string) => {
    await stock
      .release(orderId)
      .catch((err) => log.warn({ err, orderId }, "could not release a reservation"));
  };

  /** One attempt; "again" when a draft left by an earlier call turned out to be unusable. */
  const attempt = async (
    user: UserIdentity,
    lines: LineRequest[],
    key: string,
    fingerprint: string,
  ): Promise<OrderRecord | "again"> => {
    const opened = await store.openDraft({ id: randomUUID(), userId: user.userId, key, fingerprint });
    if (opened.fingerprint !== fingerprint) {
      ordersRefused.inc({ reason: "invalid" });
      throw fail(Code.InvalidArgument, "idempotency_key: already used for an order with other lines");
    }
    if (opened.kind === "placed") return opened.order;
    const orderId = opened.id;

    let reserved: Awaited<ReturnType<CatalogStock["reserve"]>>;
    try {
      reserved = await stock.reserve(orderId, lines);
    } catch (err) {
      if (isRefusal(err)) {
        // Nothing was reserved: the draft goes, and the key is free for another try.
        await store.dropDraft(orderId);
        // An earlier call's draft may have outlived its reservation (expired, or released by
        // the sweeper), which catalog refuses like missing stock: start over with a new one.
        if (!opened.fresh && (err as ConnectError).code === Code.FailedPrecondition) return "again";
        ordersRefused.inc({ reason: REFUSAL_REASON[(err as ConnectError).code] ?? "invalid" });
        throw err;
      }
      // The reservation may or may not exist: the draft stays, so a retry with the same key
      // continues it, and the sweeper releases it after the grace period if none comes.
      if (isUnreachable(err)) {
        ordersRefused.inc({ reason: "catalog_unavailable" });
        throw fail(Code.Unavailable, "the catalog is unavailable; try again with the same idempotency key");
      }
      throw err;
    }
    await hooks?.afterReserve?.(orderId);

    const priced = reserved.map(fromReservedLine);
    const currency = priced[0]?.currency ?? "";
    if (priced.some((p) => p.currency !== currency)) {
      await abandon(orderId);
      await store.dropDraft(orderId);
      throw fail(Code.FailedPrecondition, "lines: the products are priced in different currencies");
    }
    const orderLines: OrderLineRecord[] = priced.map((p) => p.line);
    const totalMinor = orderLines.reduce((sum, l) => sum + l.lineTotalMinor, 0n);
    const order = await store.place(orderId, { email: user.email, currency, totalMinor, lines: orderLines });
    if (!order) {
      // Another call with the same key placed this very order: the same answer for both.
      const placed = await store.get(orderId);
      if (placed) return placed;
      // The draft was given up meanwhile (a racing call of the key was refused, or the buyer's
      // account was deleted): nothing will store this reservation.
      await abandon(orderId);
      ordersRefused.inc({ reason: "interrupted" });
      throw new ConnectError("placing this order was interrupted; try again", Code.Aborted);
    }
    ordersPlaced.inc();
    log.info({ orderId, lines: orderLines.length }, "order placed");
    await commit(order);
    return order;
  };

  return async function place(user: UserIdentity, lines: LineRequest[], key: string): Promise<OrderRecord> {
    refuseDuplicates(lines);
    const fingerprint = fingerprintOf(lines);
    const first = await attempt(user, lines, key, fingerprint);
    if (first !== "again") return first;
    const second = await attempt(user, lines, key, fingerprint);
    // A draft again, left by yet another call: its caller is placing it; let the client retry.
    if (second === "again")
      throw new ConnectError("placing this order was interrupted; try again", Code.Aborted);
    return second;
  };
}

export type Place = ReturnType<typeof createPlacement>;
