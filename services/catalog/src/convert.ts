// Domain ↔ protobuf for catalog: the only place that builds catalog's messages.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type {
  ProductFields,
  ProductSchema,
  ReserveStockResponseSchema,
} from "@protomesh/contracts/catalog/v1/catalog_pb";
import type { ProductRecord, ProductValues } from "./pg-product-store.ts";
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
