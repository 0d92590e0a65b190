// What catalog's tests share: a client with mesh credentials (INTERNAL and ADMIN methods
// allowed, as orders calls them), products made through CreateProduct, and a look at stock.
import { CatalogService } from "@protomesh/contracts/catalog/v1/catalog_pb";
import { createMeshCredentials, createServiceClient } from "@protomesh/platform";
import { type Mesh, query } from "@protomesh/testkit";

/** CatalogService as another service of the mesh calls it. */
export function meshCatalog(mesh: Mesh, addr = mesh.addr("catalog")) {
  return createServiceClient(CatalogService, addr, {
    mesh: createMeshCredentials(mesh.env.catalog.MESH_SECRET ?? "", "orders"),
    defaultTimeoutMs: 30_000,
  });
}

export type MeshCatalog = ReturnType<typeof meshCatalog>;

/** A product in EUR with this stock; returns its id. */
export async function newProduct(
  catalog: MeshCatalog,
  stock: number,
  fields: {
    name?: string;
    description?: string;
    category?: string;
    priceMinor?: bigint;
    threshold?: number;
  } = {},
): Promise<string> {
  const { product } = await catalog.createProduct({
    product: {
      name: fields.name ?? `Product ${crypto.randomUUID().slice(0, 8)}`,
      description: fields.description ?? "",
      category: fields.category ?? "misc",
      price: { currency: "EUR", amountMinor: fields.priceMinor ?? 1999n },
      lowStockThreshold: fields.threshold ?? 0,
    },
    initialStock: stock,
  });
  if (!product) throw new Error("CreateProduct returned no product");
  return product.id;
}

/** A product's stock as GetProduct shows it. */
export async function stockOf(catalog: MeshCatalog, productId: string): Promise<number> {
  const { product } = await catalog.getProduct({ productId });
  return product?.stock ?? Number.NaN;
}

/** Rows of catalog's own database. */
export const catalogDb = <R extends Record<string, unknown>>(
  mesh: Mesh,
  sql: string,
  params: unknown[] = [],
) => query<R>(mesh.env.catalog.DATABASE_URL ?? "", sql, params);

/** Units of a product held by live (reserved or committed) reservations. */
export async function heldUnits(mesh: Mesh, productId: string): Promise<number> {
  const [row] = await catalogDb<{ n: number }>(
    mesh,
    `SELECT coalesce(sum(l.quantity), 0)::int AS n FROM reservation_lines l
       JOIN reservations r USING (order_id)
      WHERE l.product_id = $1 AND r.state IN ('reserved', 'committed')`,
    [productId],
  );
  return row?.n ?? Number.NaN;
}

/** The token with one byte of its body changed, as someone editing the cursor would. */
export function forged(token: string): string {
  const raw = Buffer.from(token, "base64url");
  raw[5] = (raw[5] ?? 0) ^ 0xff;
  return raw.toString("base64url");
}
