import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ProductChanged_Change, ProductChangedSchema } from "@protomesh/contracts/catalog/v1/events_pb";
import { addEvent, type Pool, type Tx, withTransaction } from "@protomesh/platform";
import { toProductMessage } from "./convert.ts";

/** A stored product. */
export interface ProductRecord {
  id: string;
  name: string;
  description: string;
  category: string;
  priceMinor: bigint;
  currency: string;
  stock: number;
  lowStockThreshold: number;
  imageUrl: string;
  version: bigint;
  deleted: boolean;
  createdAt: Date;
  updatedAt: Date;
}

/** The values an admin gives a new product. */
export type ProductValues = Pick<
  ProductRecord,
  "name" | "description" | "category" | "priceMinor" | "currency" | "lowStockThreshold" | "imageUrl"
>;

interface ProductRow {
  id: string;
  name: string;
  description: string;
  category: string;
  price_minor: string;
  currency: string;
  stock: number;
  low_stock_threshold: number;
  image_url: string;
  version: string;
  deleted: boolean;
  created_at: Date;
  updated_at: Date;
}

/** Every column but the search vector, which no caller needs back. */
export const PRODUCT_COLUMNS = `id, name, description, category, price_minor, currency, stock,
  low_stock_threshold, image_url, version, deleted, created_at, updated_at`;

export const toRecord = (r: ProductRow): ProductRecord => ({
  id: r.id,
  name: r.name,
  description: r.description,
  category: r.category,
  priceMinor: BigInt(r.price_minor),
  currency: r.currency,
  stock: r.stock,
  lowStockThreshold: r.low_stock_threshold,
  imageUrl: r.image_url,
  version: BigInt(r.version),
  deleted: r.deleted,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

/** Writes ProductChanged for the product's new state into the outbox of `tx`. */
async function productChanged(tx: Tx, product: ProductRecord, change: ProductChanged_Change) {
  await addEvent(tx, ProductChangedSchema, {
    product: toProductMessage(product),
    change,
    occurTime: timestampFromDate(product.updatedAt),
  });
}

/** Products, their stock and its ledger, in PostgreSQL. */
export function createPgProductStore(pool: Pool) {
  return {
    /** Inserts a product with its first ledger movement and its ProductChanged, in one transaction. */
    create(id: string, values: ProductValues, initialStock: number, actorId: string): Promise<ProductRecord> {
      return withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<ProductRow>(
          `INSERT INTO products (id, name, description, category, price_minor, currency, stock,
             low_stock_threshold, image_url)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ${PRODUCT_COLUMNS}`,
          [
            id,
            values.name,
            values.description,
            values.category,
            values.priceMinor,
            values.currency,
            initialStock,
            values.lowStockThreshold,
            values.imageUrl,
          ],
        );
        const product = toRecord(rows[0] as ProductRow);
        await tx.query(
          `INSERT INTO stock_movements (product_id, delta, stock_after, kind, actor_id)
           VALUES ($1, $2, $2, 'initial', $3)`,
          [id, initialStock, actorId],
        );
        await productChanged(tx, product, ProductChanged_Change.CREATED);
        return product;
      });
    },

    /** A product, deleted ones included (the caller decides what a deleted one means). */
    async get(id: string): Promise<ProductRecord | undefined> {
      const { rows } = await pool.query<ProductRow>(`SELECT ${PRODUCT_COLUMNS} FROM products WHERE id = $1`, [
        id,
      ]);
      return rows[0] && toRecord(rows[0]);
    },
  };
}

export type ProductStore = ReturnType<typeof createPgProductStore>;
