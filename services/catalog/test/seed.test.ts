// CATALOG_SEED_DEMO: `npm start` on an empty database has a shop to browse, seeded once even
// when two replicas start at the same moment, and never again once products exist.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { freePort } from "@protomesh/devkit";
import { type Mesh, startMesh } from "@protomesh/testkit";
import { catalogDb, meshCatalog } from "./helpers.ts";

let mesh: Mesh;
before(async () => {
  mesh = await startMesh({ services: [], gateway: false });
});
after(async () => {
  await mesh?.stop();
});

test("two replicas starting at once on an empty catalog seed the demo products once", async () => {
  const env = { CATALOG_SEED_DEMO: "true" };
  const [a, b] = await Promise.all([freePort(), freePort()]);
  await Promise.all([
    mesh.start("catalog", { env: { ...env, PORT: String(a) } }),
    mesh.start("catalog", { env: { ...env, PORT: String(b) } }),
  ]);
  const counts = await catalogDb<{ category: string; n: number }>(
    mesh,
    "SELECT category, count(*)::int AS n FROM products GROUP BY category ORDER BY category",
  );
  assert.deepEqual(
    counts.map((c) => [c.category, c.n]),
    [
      ["books", 4],
      ["coffee", 5],
      ["gear", 4],
    ],
  );

  const catalog = meshCatalog(mesh, `127.0.0.1:${a}`);
  try {
    const { products } = await catalog.listProducts({ query: "coffee", inStockOnly: true, pageSize: 100 });
    assert.ok(products.length >= 5, "a newcomer's search finds coffee to buy");
    assert.ok(products.every((p) => p.price?.currency === "EUR" && p.stock > 0));
    // A restart finds products and adds none, even after the shop deleted some.
    await catalog.deleteProduct({ productId: products[0]?.id ?? "" });
  } finally {
    catalog.close();
  }
  await mesh.start("catalog", { env: { ...env, PORT: String(await freePort()) } });
  const [total] = await catalogDb<{ n: number }>(mesh, "SELECT count(*)::int AS n FROM products");
  assert.equal(total?.n, 13);
  const [ledger] = await catalogDb<{ n: number }>(
    mesh,
    "SELECT count(*)::int AS n FROM stock_movements WHERE kind = 'initial'",
  );
  assert.equal(ledger?.n, 13, "each seeded product's stock is in the ledger");
});
