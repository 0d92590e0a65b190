import { randomUUID } from "node:crypto";
import type { CatalogService, StockLine } from "@protomesh/contracts/catalog/v1/catalog_pb";
import { type CallContext, Code, fail, type Logger, type ServiceHandlers } from "@protomesh/platform";
import { reservationEnds, reservations } from "./catalog-metrics.ts";
import { fromProductFields, toProductMessage, toReserveResponse } from "./convert.ts";
import type { ProductStore } from "./pg-product-store.ts";
import type { ReservationStore } from "./pg-reservation-store.ts";

/** CatalogService handlers. */
export function createCatalogHandlers(deps: {
  products: ProductStore;
  reservations: ReservationStore;
  currency: string;
  reservationTtlS: number;
  log: Logger;
}): ServiceHandlers<typeof CatalogService> {
  const { products, currency, reservationTtlS, log } = deps;

  /** Prices are in the shop's one currency only; `field` names where the price came in. */
  const checkCurrency = (given: string | undefined, field: string) => {
    if (given !== currency) {
      throw fail(Code.InvalidArgument, `${field}: must be ${currency}, the shop's currency`);
    }
  };

  /** Who changed stock, for the ledger: the admin, or the calling service. */
  const actorOf = (ctx: CallContext) => ctx.user?.userId ?? ctx.service ?? "";

  /** A product on sale, or NOT_FOUND (deleted ones are not on sale). */
  const onSale = async (id: string) => {
    const product = await products.get(id);
    if (!product || product.deleted) throw fail(Code.NotFound, "product not found");
    return product;
  };

  const notYet = async (): Promise<never> => {
    throw fail(Code.Unimplemented, "not implemented yet");
  };

  return {
    async createProduct(req, ctx) {
      const fields = req.product;
      if (!fields) throw fail(Code.InvalidArgument, "product: value is required");
      checkCurrency(fields.price?.currency, "product.price.currency");
      const product = await products.create(
        randomUUID(),
        fromProductFields(fields),
        req.initialStock,
        actorOf(ctx),
      );
      log.info({ productId: product.id }, "product created");
      return { product: toProductMessage(product) };
    },

    async getProduct(req) {
      return { product: toProductMessage(await onSale(req.productId)) };
    },

    updateProduct: notYet,
    deleteProduct: notYet,
    adjustStock: notYet,
    listStockMovements: notYet,
    listProducts: notYet,

    async reserveStock(req) {
      const lines = normalised(req.lines);
      const outcome = await deps.reservations
        .reserve(req.orderId.toLowerCase(), lines, reservationTtlS)
        .catch((err: unknown) => {
          const code = (err as { code?: Code }).code;
          reservations.inc({
            outcome:
              code === Code.FailedPrecondition ? "short" : code === Code.NotFound ? "not-found" : "error",
          });
          throw err;
        });
      switch (outcome.kind) {
        case "reserved":
          reservations.inc({ outcome: outcome.replay ? "replayed" : "reserved" });
          return toReserveResponse(outcome.reservation);
        case "expired":
          reservations.inc({ outcome: "refused" });
          throw fail(
            Code.FailedPrecondition,
            "this order's reservation expired; its units are back in stock",
          );
        case "released":
          reservations.inc({ outcome: "refused" });
          throw fail(
            Code.FailedPrecondition,
            "this order's reservation was released; reserve under a new order id",
          );
      }
    },

    async releaseStock(req) {
      const outcome = await deps.reservations.release(req.orderId.toLowerCase());
      if (outcome === "released") reservationEnds.inc({ how: "released" });
      return {};
    },

    async commitStock(req) {
      const outcome = await deps.reservations.commit(req.orderId.toLowerCase());
      switch (outcome) {
        case "committed":
          return {};
        case "not-found":
          throw fail(Code.NotFound, "no reservation for this order");
        case "expired":
          throw fail(Code.FailedPrecondition, "the reservation expired; its units are back in stock");
        case "released":
          throw fail(Code.FailedPrecondition, "the reservation was released; its units are back in stock");
      }
    },
  };
}

/**
 * Lines with lower-cased product ids (the order every transaction locks products in), one per
 * product: two lines of one product would be one line counted twice.
 */
function normalised(lines: StockLine[]) {
  const seen = new Set<string>();
  return lines.map((l, i) => {
    const productId = l.productId.toLowerCase();
    if (seen.has(productId)) {
      throw fail(Code.InvalidArgument, `lines[${i}].product_id: the product is already in another line`);
    }
    seen.add(productId);
    return { productId, quantity: l.quantity };
  });
}
