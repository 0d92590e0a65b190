import { randomUUID } from "node:crypto";
import type { CatalogService, ProductFields, StockLine } from "@protomesh/contracts/catalog/v1/catalog_pb";
import {
  type CallContext,
  Code,
  fail,
  type Logger,
  type PageTokens,
  type ServiceHandlers,
} from "@protomesh/platform";
import { reservationEnds, reserveOutcomes } from "./catalog-metrics.ts";
import {
  fromProductFields,
  productQueryScope,
  toProductMessage,
  toProductQuery,
  toReserveResponse,
  toStockMovement,
} from "./convert.ts";
import { isMaskPath, type MaskPath, type ProductStore } from "./pg-product-store.ts";
import type { ReservationStore } from "./pg-reservation-store.ts";

const DEFAULT_PAGE_SIZE = 20;

/** The reservations metric's outcome for a ReserveStock that failed with this code. */
const FAILED_OUTCOMES = new Map<Code | undefined, string>([
  [Code.FailedPrecondition, "short"],
  [Code.NotFound, "not-found"],
  [Code.InvalidArgument, "invalid"],
]);

/** CatalogService handlers. */
export function createCatalogHandlers(deps: {
  products: ProductStore;
  reservations: ReservationStore;
  currency: string;
  reservationTtlS: number;
  pageTokens: PageTokens;
  log: Logger;
}): ServiceHandlers<typeof CatalogService> {
  const { products, currency, reservationTtlS, pageTokens, log } = deps;

  /**
   * The fields a create or an update sets are complete: a name that is not blank, and a price
   * in the shop's one currency. (The contract lets them be empty for fields an update leaves.)
   */
  const checkFields = (f: ProductFields, paths: readonly MaskPath[]) => {
    if (paths.includes("name") && !f.name.trim())
      throw fail(Code.InvalidArgument, "product.name: value is required");
    if (!paths.includes("price")) return;
    if (!f.price) throw fail(Code.InvalidArgument, "product.price: value is required");
    if (f.price.currency !== currency) {
      throw fail(Code.InvalidArgument, `product.price.currency: must be ${currency}, the shop's currency`);
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

  return {
    async createProduct(req, ctx) {
      const fields = req.product;
      if (!fields) throw fail(Code.InvalidArgument, "product: value is required");
      checkFields(fields, ["name", "price"]);
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

    async updateProduct(req) {
      // Validation guarantees the mask is present, names only these paths, and a product is given.
      const paths = [...new Set(req.updateMask?.paths ?? [])].filter(isMaskPath);
      const fields = req.product;
      if (!fields || paths.length === 0)
        throw fail(Code.InvalidArgument, "update_mask: name at least one field");
      checkFields(fields, paths);
      const product = await products.update(
        req.productId,
        req.expectedVersion,
        paths,
        fromProductFields(fields),
      );
      log.info({ productId: product.id, fields: paths }, "product updated");
      return { product: toProductMessage(product) };
    },

    async deleteProduct(req) {
      await products.remove(req.productId, req.expectedVersion);
      log.info({ productId: req.productId }, "product deleted");
      return {};
    },

    async adjustStock(req, ctx) {
      const change =
        req.change.case === "delta"
          ? { delta: req.change.value }
          : req.change.case === "setTo"
            ? { setTo: req.change.value }
            : undefined;
      if (!change) throw fail(Code.InvalidArgument, "change: delta or set_to is required");
      const product = await products.adjustStock(req.productId, change, req.reason, actorOf(ctx));
      log.info({ productId: product.id, stock: product.stock }, "stock adjusted");
      return { product: toProductMessage(product) };
    },

    async listStockMovements(req) {
      const scope = `movements\0${req.productId.toLowerCase()}`;
      const page = await products.movements(
        req.productId,
        req.pageSize || DEFAULT_PAGE_SIZE,
        pageTokens.cursorOf(scope, req.pageToken),
      );
      if (!page) throw fail(Code.NotFound, "product not found");
      return {
        movements: page.items.map(toStockMovement),
        nextPageToken: pageTokens.tokenFor(scope, page.next),
      };
    },

    async listProducts(req) {
      const query = toProductQuery(req);
      if (query.sort === "relevance" && !query.text) {
        throw fail(Code.InvalidArgument, "query: sort by relevance needs a query");
      }
      const scope = productQueryScope(query);
      const page = await products.list(
        query,
        req.pageSize || DEFAULT_PAGE_SIZE,
        pageTokens.cursorOf(scope, req.pageToken),
      );
      return {
        products: page.items.map(toProductMessage),
        nextPageToken: pageTokens.tokenFor(scope, page.next),
      };
    },

    async reserveStock(req) {
      const lines = normalised(req.lines);
      const outcome = await deps.reservations
        .reserve(req.orderId.toLowerCase(), lines, reservationTtlS)
        .catch((err: unknown) => {
          reserveOutcomes.inc({ outcome: FAILED_OUTCOMES.get((err as { code?: Code }).code) ?? "error" });
          throw err;
        });
      switch (outcome.kind) {
        case "reserved":
          reserveOutcomes.inc({ outcome: outcome.replay ? "replayed" : "reserved" });
          return toReserveResponse(outcome.reservation);
        case "expired":
          reserveOutcomes.inc({ outcome: "refused" });
          throw fail(
            Code.FailedPrecondition,
            "this order's reservation expired; its units are back in stock",
          );
        case "released":
          reserveOutcomes.inc({ outcome: "refused" });
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
