// Domain ↔ protobuf for catalog: the only place that builds catalog's messages.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type ListProductsRequest,
  type ProductFields,
  type ProductSchema,
  ProductSort,
  type ReserveStockResponseSchema,
  StockMovement_Kind,
  type StockMovementSchema,
} from "@protomesh/contracts/catalog/v1/catalog_pb";
import type {
  MovementRecord,
  ProductQuery,
  ProductRecord,
  ProductSortKey,
  ProductValues,
} from "./pg-product-store.ts";
import type { Reservation } from "./pg-reservation-store.ts";

/** A product as every caller sees it. */
export function toProductMessage(p: ProductRecord): MessageInitShape<typeof ProductSchema> {
  return {
    id: p.id,
    name: p.name,
    description: p.description,
    category: p.category,
    price: { currency: p.currency, amountMinor: p.priceMinor },
    stock: p.stock,
    lowStockThreshold: p.lowStockThreshold,
    imageUrl: p.imageUrl,
    version: p.version,
    createTime: timestampFromDate(p.createdAt),
    updateTime: timestampFromDate(p.updatedAt),
  };
}

/** A new product's values (validation has checked each field; the handler checks the currency). */
export function fromProductFields(f: ProductFields): ProductValues {
  return {
    name: f.name,
    description: f.description,
    category: f.category,
    priceMinor: f.price?.amountMinor ?? 0n,
    currency: f.price?.currency ?? "",
    lowStockThreshold: f.lowStockThreshold,
    imageUrl: f.imageUrl,
  };
}

/** ReserveStock's answer: each line with the name and unit price the order keeps. */
export function toReserveResponse(r: Reservation): MessageInitShape<typeof ReserveStockResponseSchema> {
  return {
    lines: r.lines.map((l) => ({
      productId: l.productId,
      quantity: l.quantity,
      name: l.name,
      unitPrice: { currency: l.currency, amountMinor: l.priceMinor },
    })),
    expireTime: timestampFromDate(r.expireTime),
  };
}

const KINDS: Record<MovementRecord["kind"], StockMovement_Kind> = {
  initial: StockMovement_Kind.INITIAL,
  adjustment: StockMovement_Kind.ADJUSTMENT,
  reservation: StockMovement_Kind.RESERVATION,
  release: StockMovement_Kind.RELEASE,
  expiry: StockMovement_Kind.EXPIRY,
};

/** One ledger entry. */
export function toStockMovement(m: MovementRecord): MessageInitShape<typeof StockMovementSchema> {
  return {
    productId: m.productId,
    delta: m.delta,
    stockAfter: m.stockAfter,
    kind: KINDS[m.kind],
    reason: m.reason,
    orderId: m.orderId,
    actorId: m.actorId,
    createTime: timestampFromDate(m.createdAt),
  };
}

const SORTS: Record<ProductSort, ProductSortKey | undefined> = {
  [ProductSort.UNSPECIFIED]: undefined,
  [ProductSort.RELEVANCE]: "relevance",
  [ProductSort.PRICE_ASC]: "price-asc",
  [ProductSort.PRICE_DESC]: "price-desc",
  [ProductSort.NEWEST]: "newest",
};

/** ListProducts' search; an unspecified sort is by relevance when there are words, else newest. */
export function toProductQuery(req: ListProductsRequest): ProductQuery {
  const text = req.query.trim();
  return {
    text,
    category: req.category,
    minPriceMinor: req.minPriceMinor,
    maxPriceMinor: req.maxPriceMinor,
    inStockOnly: req.inStockOnly,
    sort: SORTS[req.sort] ?? (text ? "relevance" : "newest"),
  };
}

/** What a page token is bound to: the whole query, so it pages only the results it came from. */
export const productQueryScope = (q: ProductQuery) =>
  ["list", q.text, q.category, q.minPriceMinor, q.maxPriceMinor, q.inStockOnly, q.sort].join("\0");
