import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ProductChanged_Change, ProductChangedSchema } from "@protomesh/contracts/catalog/v1/events_pb";
import {
  addEvent,
  Code,
  type Cursor,
  fail,
  type Page,
  type Pool,
  type Tx,
  toPage,
  withTransaction,
} from "@protomesh/platform";
import { toProductMessage } from "./convert.ts";
import { stockLowIfCrossed } from "./stock-low.ts";

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

/**
 * The fields UpdateProduct may change: update-mask path → columns. The contract's mask rule
 * lists the same paths; this is the only other place they are named.
 */
const MASK_COLUMNS = {
  name: ["name"],
  description: ["description"],
  category: ["category"],
  price: ["price_minor", "currency"],
  low_stock_threshold: ["low_stock_threshold"],
  image_url: ["image_url"],
} as const;

export type MaskPath = keyof typeof MASK_COLUMNS;
export const isMaskPath = (p: string): p is MaskPath => Object.hasOwn(MASK_COLUMNS, p);

const MASK_VALUES: Record<MaskPath, (v: ProductValues) => unknown[]> = {
  name: (v) => [v.name],
  description: (v) => [v.description],
  category: (v) => [v.category],
  price: (v) => [v.priceMinor, v.currency],
  low_stock_threshold: (v) => [v.lowStockThreshold],
  image_url: (v) => [v.imageUrl],
};

/** A change of stock by an admin: by a delta, or to an absolute count. */
export type StockAdjustment = { delta: number } | { setTo: number };

/** One entry of the stock ledger. */
export interface MovementRecord {
  productId: string;
  delta: number;
  stockAfter: number;
  kind: "initial" | "adjustment" | "reservation" | "release" | "expiry";
  reason: string;
  orderId: string;
  actorId: string;
  createdAt: Date;
}

export type ProductSortKey = "relevance" | "price-asc" | "price-desc" | "newest";

/** ListProducts' search; empty or zero means no condition. */
export interface ProductQuery {
  text: string;
  category: string;
  minPriceMinor: bigint;
  maxPriceMinor: bigint;
  inStockOnly: boolean;
  sort: ProductSortKey;
}

const MAX_STOCK = 2_147_483_647;

/**
 * Per sort: the ORDER BY, the keyset condition after a cursor ($k the key, $i the id), and the
 * key as text, exact (a timestamp to the microsecond, a real rank as PostgreSQL prints it,
 * which reads back as the same value). Ties are broken by id, so the order is total.
 */
const SORTS: Record<ProductSortKey, { order: string; after: string; key: string }> = {
  newest: {
    order: "created_at DESC, id DESC",
    after: "(created_at, id) < ($k::timestamptz, $i::uuid)",
    key: "created_at::text",
  },
  "price-asc": {
    order: "price_minor, id",
    after: "(price_minor, id) > ($k::bigint, $i::uuid)",
    key: "price_minor::text",
  },
  "price-desc": {
    order: "price_minor DESC, id DESC",
    after: "(price_minor, id) < ($k::bigint, $i::uuid)",
    key: "price_minor::text",
  },
  relevance: {
    order: "rank DESC, id DESC",
    after: "(ts_rank(search, q.q), id) < ($k::real, $i::uuid)",
    key: "rank::text",
  },
};

/** Writes ProductChanged for the product's new state into the outbox of `tx`. */
async function productChanged(tx: Tx, product: ProductRecord, change: ProductChanged_Change) {
  await addEvent(tx, ProductChangedSchema, {
    product: toProductMessage(product),
    change,
    occurTime: timestampFromDate(product.updatedAt),
  });
}

/** Inserts a product with its first ledger movement and its ProductChanged, within `tx`. */
export async function insertProduct(
  tx: Tx,
  id: string,
  values: ProductValues,
  initialStock: number,
  actorId: string,
): Promise<ProductRecord> {
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
}

/** Why a guarded UPDATE matched no row: NOT_FOUND (unknown or deleted) or ABORTED (another version). */
async function whyUnchanged(tx: Tx, id: string) {
  const { rows } = await tx.query<{ deleted: boolean; version: string }>(
    "SELECT deleted, version FROM products WHERE id = $1",
    [id],
  );
  const p = rows[0];
  if (!p || p.deleted) return fail(Code.NotFound, "product not found");
  return fail(
    Code.Aborted,
    `the product changed since you read it (now at version ${p.version}); nothing was applied, read it again`,
  );
}

/** Products, their stock and its ledger, in PostgreSQL. */
export function createPgProductStore(pool: Pool) {
  return {
    create(id: string, values: ProductValues, initialStock: number, actorId: string): Promise<ProductRecord> {
      return withTransaction(pool, (tx) => insertProduct(tx, id, values, initialStock, actorId));
    },

    /** A product, deleted ones included (the caller decides what a deleted one means). */
    async get(id: string): Promise<ProductRecord | undefined> {
      const { rows } = await pool.query<ProductRow>(`SELECT ${PRODUCT_COLUMNS} FROM products WHERE id = $1`, [
        id,
      ]);
      return rows[0] && toRecord(rows[0]);
    },

    /**
     * Sets the masked fields if the product is still at `expectedVersion` (the check and the
     * write are one UPDATE: of two writers from one version, the second matches nothing),
     * bumps the version and emits ProductChanged.
     */
    update(
      id: string,
      expectedVersion: bigint,
      paths: MaskPath[],
      values: ProductValues,
    ): Promise<ProductRecord> {
      return withTransaction(pool, async (tx) => {
        const params: unknown[] = [id, expectedVersion];
        const sets = paths.flatMap((path) => {
          const vals = MASK_VALUES[path](values);
          return MASK_COLUMNS[path].map((column, i) => `${column} = $${params.push(vals[i])}`);
        });
        const { rows } = await tx.query<ProductRow>(
          `UPDATE products SET ${[...sets, "version = version + 1", "updated_at = now()"].join(", ")}
            WHERE id = $1 AND version = $2 AND NOT deleted RETURNING ${PRODUCT_COLUMNS}`,
          params,
        );
        if (!rows[0]) throw await whyUnchanged(tx, id);
        const product = toRecord(rows[0]);
        await productChanged(tx, product, ProductChanged_Change.UPDATED);
        return product;
      });
    },

    /**
     * Takes a product off sale (0 as the version: whatever its version). Deleting a deleted
     * product changes nothing and succeeds.
     */
    remove(id: string, expectedVersion: bigint): Promise<void> {
      return withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<ProductRow>(
          `UPDATE products SET deleted = true, version = version + 1, updated_at = now()
            WHERE id = $1 AND NOT deleted AND ($2::bigint = 0 OR version = $2) RETURNING ${PRODUCT_COLUMNS}`,
          [id, expectedVersion],
        );
        if (rows[0]) {
          await productChanged(tx, toRecord(rows[0]), ProductChanged_Change.DELETED);
          return;
        }
        const exists = await tx.query("SELECT 1 FROM products WHERE id = $1 AND deleted", [id]);
        if (!exists.rowCount) throw await whyUnchanged(tx, id);
      });
    },

    /**
     * Changes a product's stock by an admin's hand, with its ledger entry, ProductChanged, and
     * StockLow when it crosses the threshold. The row is locked first, so the computed delta
     * of a `setTo` is exact even while orders reserve.
     */
    adjustStock(
      id: string,
      change: StockAdjustment,
      reason: string,
      actorId: string,
    ): Promise<ProductRecord> {
      return withTransaction(pool, async (tx) => {
        const { rows: locked } = await tx.query<{ stock: number; deleted: boolean }>(
          "SELECT stock, deleted FROM products WHERE id = $1 FOR UPDATE",
          [id],
        );
        const current = locked[0];
        if (!current || current.deleted) throw fail(Code.NotFound, "product not found");
        const stock = "setTo" in change ? change.setTo : current.stock + change.delta;
        if (stock < 0) {
          throw fail(
            Code.FailedPrecondition,
            `the stock would fall below zero (${current.stock} in stock); nothing was changed`,
          );
        }
        if (stock > MAX_STOCK) throw fail(Code.FailedPrecondition, `the stock would exceed ${MAX_STOCK}`);
        const { rows } = await tx.query<ProductRow>(
          `UPDATE products SET stock = $2, version = version + 1, updated_at = now() WHERE id = $1
           RETURNING ${PRODUCT_COLUMNS}`,
          [id, stock],
        );
        const product = toRecord(rows[0] as ProductRow);
        await tx.query(
          `INSERT INTO stock_movements (product_id, delta, stock_after, kind, reason, actor_id)
           VALUES ($1, $2, $3, 'adjustment', $4, $5)`,
          [id, stock - current.stock, stock, reason, actorId],
        );
        await stockLowIfCrossed(tx, {
          id,
          name: product.name,
          before: current.stock,
          after: stock,
          threshold: product.lowStockThreshold,
        });
        await productChanged(tx, product, ProductChanged_Change.STOCK_ADJUSTED);
        return product;
      });
    },

    /** A product's ledger, newest first; undefined when there is no such product (deleted ones have one). */
    async movements(
      productId: string,
      limit: number,
      after?: Cursor,
    ): Promise<Page<MovementRecord> | undefined> {
      const exists = await pool.query("SELECT 1 FROM products WHERE id = $1", [productId]);
      if (!exists.rowCount) return undefined;
      const { rows } = await pool.query<{
        id: string;
        sort_key: string;
        product_id: string;
        delta: number;
        stock_after: number;
        kind: MovementRecord["kind"];
        reason: string;
        order_id: string | null;
        actor_id: string;
        created_at: Date;
      }>(
        `SELECT id, seq::text AS sort_key, product_id, delta, stock_after, kind, reason, order_id, actor_id, created_at
           FROM stock_movements WHERE product_id = $1 AND ($3::bigint IS NULL OR seq < $3)
          ORDER BY seq DESC LIMIT $2`,
        [productId, limit + 1, after?.key ?? null],
      );
      return toPage(rows, limit, (r) => ({
        productId: r.product_id,
        delta: r.delta,
        stockAfter: r.stock_after,
        kind: r.kind,
        reason: r.reason,
        orderId: r.order_id ?? "",
        actorId: r.actor_id,
        createdAt: r.created_at,
      }));
    },

    /**
     * Products on sale that match, in the query's sort, after `after`. Full-text search uses
     * websearch syntax ("red mug", "mug -red", "\"french press\"") on the stemmed name and
     * description, ranked with ts_rank (name words weigh more).
     */
    async list(q: ProductQuery, limit: number, after?: Cursor): Promise<Page<ProductRecord>> {
      const sort = SORTS[q.sort];
      const params: unknown[] = [limit + 1, q.text];
      const where = ["NOT deleted"];
      if (q.text) where.push("search @@ q.q");
      if (q.category) where.push(`category = $${params.push(q.category)}`);
      if (q.minPriceMinor > 0n) where.push(`price_minor >= $${params.push(q.minPriceMinor)}`);
      if (q.maxPriceMinor > 0n) where.push(`price_minor <= $${params.push(q.maxPriceMinor)}`);
      if (q.inStockOnly) where.push("stock > 0");
      if (after) {
        const k = `$${params.push(after.key)}`;
        const i = `$${params.push(after.id)}`;
        where.push(sort.after.replace("$k", () => k).replace("$i", () => i));
      }
      // Ranked only when there are words to rank by.
      const rank = q.text ? "ts_rank(search, q.q)" : "0::real";
      const { rows } = await pool.query<ProductRow & { sort_key: string }>(
        `SELECT *, ${sort.key} AS sort_key FROM (
           SELECT ${PRODUCT_COLUMNS}, ${rank} AS rank
             FROM products, websearch_to_tsquery('english', $2) AS q(q)
            WHERE ${where.join(" AND ")}
         ) found ORDER BY ${sort.order} LIMIT $1`,
        params,
      );
      return toPage(rows, limit, toRecord);
    },
  };
}

export type ProductStore = ReturnType<typeof createPgProductStore>;
