// ListProducts through the gateway: ranked full-text search, filters, sorts, and keyset pages
// that visit every product exactly once while others are inserted and updated.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import {
  CatalogService,
  type ListProductsRequest,
  ProductSort,
} from "@protomesh/contracts/catalog/v1/catalog_pb";
import { assertCode, gatewayClient, type Mesh, startMesh } from "@protomesh/testkit";
import { uniqueTag } from "../../user/test/helpers.ts";
import { catalogDb, forged, type MeshCatalog, meshCatalog, newProduct } from "./helpers.ts";

let mesh: Mesh;
let internal: MeshCatalog;
let shop: ReturnType<typeof gatewayClient<typeof CatalogService>>;
before(async () => {
  mesh = await startMesh({ services: ["auth", "catalog"], env: { catalog: { CATALOG_SEED_DEMO: "false" } } });
  internal = meshCatalog(mesh);
  shop = gatewayClient(CatalogService, mesh.url, "connect-json");
});
after(async () => {
  internal?.close();
  await mesh?.stop();
});

type Query = Partial<Omit<ListProductsRequest, "$typeName" | "$unknown">>;

/** Every page of a query, as names. */
async function allNames(req: Query, pageSize = 2): Promise<string[]> {
  const names: string[] = [];
  let pageToken = "";
  for (let page = 0; page < 100; page++) {
    const res = await shop.listProducts({ ...req, pageSize, pageToken });
    names.push(...res.products.map((p) => p.name));
    pageToken = res.nextPageToken;
    if (!pageToken) return names;
  }
  throw new Error("more than 100 pages");
}

test("search finds words in name and description, stemmed, name matches first", async () => {
  const tag = uniqueTag();
  await newProduct(internal, 5, { name: `Teapot ${tag}`, description: "Pairs well with any mug" });
  await newProduct(internal, 5, { name: `Blue Ceramic Mug ${tag}`, description: "Handmade in Porto" });
  await newProduct(internal, 5, { name: `Red Mug ${tag}`, description: "A mug, in red" });
  await newProduct(internal, 5, { name: `Kettle ${tag}`, description: "Boils water" });

  const ranked = await allNames({ query: `mugs ${tag}` });
  assert.equal(ranked.length, 3, "plural finds singular; the kettle has no mug");
  assert.equal(ranked.at(-1), `Teapot ${tag}`, "a match in the description ranks below matches in the name");
  assert.equal(ranked[0], `Red Mug ${tag}`, "mug in name and description ranks first");

  assert.deepEqual(await allNames({ query: `${tag} mug -red` }), [
    `Blue Ceramic Mug ${tag}`,
    `Teapot ${tag}`,
  ]);
  assert.deepEqual(await allNames({ query: `"ceramic mug" ${tag}` }), [`Blue Ceramic Mug ${tag}`]);
  assert.deepEqual(await allNames({ query: `porto ${tag}` }), [`Blue Ceramic Mug ${tag}`]);
  assert.deepEqual(await allNames({ query: `${tag} submarine` }), []);
  // Operators and punctuation are words, never syntax errors.
  assert.deepEqual(await allNames({ query: `${tag} & | ! ( :* '` }), await allNames({ query: tag }));
});

test("filters by category, price range and stock; sorts by price and newest", async () => {
  const category = `c-${uniqueTag()}`;
  const made: string[] = [];
  for (const [name, price, stock] of [
    ["Alpha", 500n, 3],
    ["Bravo", 1500n, 0],
    ["Charlie", 1000n, 8],
    ["Delta", 2500n, 1],
    ["Echo", 1000n, 2],
  ] as const) {
    made.push(await newProduct(internal, stock, { name, priceMinor: price, category }));
  }
  await newProduct(internal, 9, { name: "Elsewhere", priceMinor: 1000n, category: `${category}-x` });
  // Charlie and Echo cost the same: the id breaks the tie, ascending with the price, else descending.
  const tied = (made[2] ?? "") < (made[4] ?? "") ? ["Charlie", "Echo"] : ["Echo", "Charlie"];
  const tiedDesc = [...tied].reverse();

  assert.deepEqual(
    await allNames({ category }),
    ["Echo", "Delta", "Charlie", "Bravo", "Alpha"],
    "newest first by default",
  );
  assert.deepEqual(await allNames({ category, sort: ProductSort.PRICE_ASC }), [
    "Alpha",
    ...tied,
    "Bravo",
    "Delta",
  ]);
  assert.deepEqual(await allNames({ category, sort: ProductSort.PRICE_DESC }), [
    "Delta",
    "Bravo",
    ...tiedDesc,
    "Alpha",
  ]);
  assert.deepEqual(
    (
      await allNames({ category, minPriceMinor: 1000n, maxPriceMinor: 1500n, sort: ProductSort.NEWEST })
    ).sort(),
    ["Bravo", "Charlie", "Echo"],
    "bounds are inclusive",
  );
  assert.deepEqual(await allNames({ category, inStockOnly: true, sort: ProductSort.PRICE_DESC }), [
    "Delta",
    ...tiedDesc,
    "Alpha",
  ]);
  assert.deepEqual(await allNames({ category, maxPriceMinor: 999n }), ["Alpha"]);
  const { products } = await shop.listProducts({ category, pageSize: 1 });
  assert.equal(products[0]?.price?.currency, "EUR");
});

test("a walk over 500 products visits each once while products are inserted and updated", async () => {
  const category = `walk-${uniqueTag()}`;
  // One statement: 500 products with the same created_at, so the id tie-break is exercised too.
  await catalogDb(
    mesh,
    `INSERT INTO products (id, name, description, category, price_minor, currency, stock)
     SELECT gen_random_uuid(), 'Walker ' || i, 'item number ' || i, $1, (i * 37) % 1000 + 100, 'EUR', 5
       FROM generate_series(1, 500) AS i`,
    [category],
  );
  const existing = (
    await catalogDb<{ id: string }>(mesh, "SELECT id FROM products WHERE category = $1", [category])
  ).map((r) => r.id);
  assert.equal(existing.length, 500);

  for (const sort of [ProductSort.NEWEST, ProductSort.PRICE_ASC]) {
    let walking = true;
    // Inserts of new products, and updates of existing ones (name, description, stock; for the
    // newest sort also the price), while the walk runs.
    const churn = (async () => {
      let i = 0;
      while (walking && i < 200) {
        i++;
        await newProduct(internal, 1, { name: `Newcomer ${i}`, category, priceMinor: BigInt(100 + i) });
        const id = existing[(i * 7) % existing.length] ?? "";
        const { product } = await internal.getProduct({ productId: id });
        const paths = sort === ProductSort.NEWEST ? ["name", "price"] : ["name", "description"];
        await internal.updateProduct({
          productId: id,
          product: {
            name: `Walker renamed ${i}`,
            description: "changed",
            price: { currency: "EUR", amountMinor: 99_999n },
          },
          updateMask: { paths },
          expectedVersion: product?.version ?? 1n,
        });
        await internal
          .reserveStock({ orderId: randomUUID(), lines: [{ productId: id, quantity: 1 }] })
          .catch(() => {});
      }
      return i;
    })();
    const seen = new Map<string, number>();
    let pageToken = "";
    for (let page = 0; page < 100; page++) {
      const res = await shop.listProducts({ category, sort, pageSize: 37, pageToken });
      for (const p of res.products) seen.set(p.id, (seen.get(p.id) ?? 0) + 1);
      pageToken = res.nextPageToken;
      if (!pageToken) break;
      // Give the churn room between pages.
      await new Promise((resolve) => setImmediate(resolve));
    }
    walking = false;
    const churned = await churn;
    assert.ok(churned > 0, "products changed during the walk");
    const twice = [...seen].filter(([, n]) => n > 1);
    assert.deepEqual(twice, [], `${ProductSort[sort]}: no product visited twice`);
    const missed = existing.filter((id) => !seen.has(id));
    assert.deepEqual(missed, [], `${ProductSort[sort]}: every existing product visited`);
  }
});

test("page tokens work only for the query they came from; bad requests are INVALID_ARGUMENT", async () => {
  const category = `t-${uniqueTag()}`;
  for (let i = 0; i < 3; i++) await newProduct(internal, 1, { name: `Token ${i}`, category });
  const first = await shop.listProducts({ category, pageSize: 1 });
  assert.ok(first.nextPageToken);
  const next = await shop.listProducts({ category, pageSize: 2, pageToken: first.nextPageToken });
  assert.equal(next.products.length, 2, "the page size may change between pages");

  const misuse: Array<[string, Query]> = [
    ["other category", { category: `${category}-2` }],
    ["other sort", { category, sort: ProductSort.PRICE_ASC }],
    ["a filter added", { category, inStockOnly: true }],
    ["a query added", { category, query: "token" }],
    ["other price bound", { category, minPriceMinor: 1n }],
  ];
  for (const [what, req] of misuse) {
    const err = await assertCode(
      shop.listProducts({ ...req, pageToken: first.nextPageToken }),
      Code.InvalidArgument,
      what,
    );
    assert.match(err.rawMessage, /^page_token: /, what);
  }
  for (const [what, pageToken] of [
    ["forged", forged(first.nextPageToken)],
    ["garbage", "not-a-token"],
    ["truncated", first.nextPageToken.slice(0, 20)],
  ] as const) {
    await assertCode(shop.listProducts({ category, pageToken }), Code.InvalidArgument, what);
  }
  const bad: Array<[string, Query, RegExp]> = [
    ["page size", { pageSize: 101 }, /^page_size: /],
    ["relevance without a query", { sort: ProductSort.RELEVANCE }, /relevance/],
    ["relevance with blanks", { sort: ProductSort.RELEVANCE, query: "   " }, /^query: /],
    ["inverted price range", { minPriceMinor: 500n, maxPriceMinor: 100n }, /max_price_minor/],
    ["bad category", { category: "Not A Category" }, /^category: /],
    ["long query", { query: "q".repeat(201) }, /^query: /],
    ["NUL in query", { query: "mug\0" }, /^query: /],
    ["unknown sort", { sort: 99 as ProductSort }, /^sort: /],
  ];
  for (const [what, req, message] of bad) {
    const err = await assertCode(shop.listProducts(req), Code.InvalidArgument, what);
    assert.match(err.rawMessage, message, what);
  }
});
