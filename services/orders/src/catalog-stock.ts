import type { CatalogService, ReservedLine } from "@protomesh/contracts/catalog/v1/catalog_pb";
import { Code, ConnectError, type ServiceClient } from "@protomesh/platform";
import type { CommitOutcome } from "./pg-order-store.ts";

/** Each catalog call gives up after this (a call made while serving one also keeps its deadline). */
export const CATALOG_TIMEOUT_MS = 5_000;

/** Codes with which catalog refused a reservation outright: nothing was reserved. */
const REFUSED = [Code.FailedPrecondition, Code.NotFound, Code.InvalidArgument];

/** True when catalog answered that it reserved nothing (out of stock, unknown product…). */
export const isRefusal = (err: unknown) => err instanceof ConnectError && REFUSED.includes(err.code);

/** True when catalog could not be reached or did not answer in time: the outcome is unknown. */
export const isUnreachable = (err: unknown) =>
  err instanceof ConnectError && [Code.Unavailable, Code.DeadlineExceeded, Code.Canceled].includes(err.code);

/** An order's stock in catalog: reserve, commit, release, all idempotent per order id. */
export function createCatalogStock(catalog: ServiceClient<typeof CatalogService>) {
  const opts = { timeoutMs: CATALOG_TIMEOUT_MS };
  return {
    /** Reserves every line or none; the lines come back priced, in request order. */
    async reserve(
      orderId: string,
      lines: { productId: string; quantity: number }[],
    ): Promise<ReservedLine[]> {
      return (await catalog.reserveStock({ orderId, lines }, opts)).lines;
    },

    /** Makes the reservation permanent, or learns that catalog no longer holds it. */
    async commit(orderId: string): Promise<CommitOutcome> {
      try {
        await catalog.commitStock({ orderId }, opts);
        return "committed";
      } catch (err) {
        if (
          err instanceof ConnectError &&
          (err.code === Code.FailedPrecondition || err.code === Code.NotFound)
        )
          return "lost";
        throw err;
      }
    },

    /** Returns the order's units to stock (a no-op when it holds none). */
    async release(orderId: string): Promise<void> {
      await catalog.releaseStock({ orderId }, opts);
    },
  };
}

export type CatalogStock = ReturnType<typeof createCatalogStock>;
