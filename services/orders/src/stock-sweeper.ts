import { type Logger, periodic, type Worker } from "@protomesh/platform";
import type { CatalogStock } from "./catalog-stock.ts";
import { ordersCancelled, sweeperActions } from "./orders-metrics.ts";
import type { OrderStore } from "./pg-order-store.ts";

/** Rows locked per batch, and batches per kind of work per pass (bounds one pass). */
const BATCH = 20;
const MAX_BATCHES = 25;

/** What one pass settled. */
interface SweepCounts {
  draftsReleased: number;
  stockCommitted: number;
  expiredCancelled: number;
  stockReleased: number;
}

/**
 * Makes every order's stock in catalog match its status, whatever failed midway: drafts left
 * by a crash or an unreachable catalog are released and deleted once older than the grace
 * period; placed orders whose stock is only reserved get it committed (or, if catalog lost the
 * reservation, are cancelled by the system); cancelled orders get their units released. Every
 * replica runs it; rows are locked with SKIP LOCKED, so replicas share the work.
 */
export function createStockSweeper(opts: {
  store: OrderStore;
  stock: CatalogStock;
  graceS: number;
  intervalMs: number;
  log: Logger;
}): Worker {
  const { store, stock, log } = opts;

  /** Catalog calls of the current pass that failed: logged once per pass, not once per order. */
  let failed: { count: number; err?: unknown; orderId?: string } = { count: 0 };

  /** A catalog call's result, or undefined when it failed (left for the next pass). */
  const attempt = async <T>(orderId: string, call: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await call();
    } catch (err) {
      failed.count++;
      failed.err ??= err;
      failed.orderId ??= orderId;
      return undefined;
    }
  };
  const released = async (orderId: string) =>
    (await attempt(orderId, async () => stock.release(orderId).then(() => true))) ?? false;

  /**
   * Runs batches of one kind of work while they come back full and settle something (rows
   * catalog could not settle stay, and would be claimed again at once).
   */
  const drain = async (signal: AbortSignal, batch: () => Promise<{ claimed: number; done: number }>) => {
    for (let i = 0; i < MAX_BATCHES && !signal.aborted; i++) {
      const { claimed, done } = await batch();
      if (claimed < BATCH || done === 0) return;
    }
  };

  const sweep = async (signal: AbortSignal): Promise<void> => {
    failed = { count: 0 };
    const counts: SweepCounts = {
      draftsReleased: 0,
      stockCommitted: 0,
      expiredCancelled: 0,
      stockReleased: 0,
    };
    await drain(signal, async () => {
      const r = await store.sweepDrafts(opts.graceS, BATCH, released);
      counts.draftsReleased += r.done;
      return r;
    });
    await drain(signal, async () => {
      const r = await store.sweepUncommitted(BATCH, (id) => attempt(id, () => stock.commit(id)));
      counts.stockCommitted += r.committed;
      counts.expiredCancelled += r.expired;
      return { claimed: r.claimed, done: r.committed + r.expired };
    });
    await drain(signal, async () => {
      const r = await store.sweepUnreleased(BATCH, released);
      counts.stockReleased += r.done;
      return r;
    });
    sweeperActions.inc({ action: "draft_released" }, counts.draftsReleased);
    sweeperActions.inc({ action: "stock_committed" }, counts.stockCommitted);
    sweeperActions.inc({ action: "expired_cancelled" }, counts.expiredCancelled);
    sweeperActions.inc({ action: "stock_released" }, counts.stockReleased);
    ordersCancelled.inc({ by: "system" }, counts.expiredCancelled);
    if (Object.values(counts).some((n) => n > 0)) log.info(counts, "settled orders' stock");
    if (failed.count > 0) {
      sweeperActions.inc({ action: "catalog_failed" }, failed.count);
      log.warn(
        { err: failed.err, orderId: failed.orderId, failures: failed.count },
        "catalog calls of the stock sweep failed; those orders wait for the next pass",
      );
    }
  };

  return periodic({
    what: "stock sweep",
    intervalMs: opts.intervalMs,
    log,
    task: sweep,
  });
}
