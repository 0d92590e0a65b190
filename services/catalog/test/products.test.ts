// Products through the gateway as admins and shoppers use them: create, read, update with
// optimistic locking, soft delete, stock adjustments and their ledger, the events, who may do
// what, and bad input that writes nothing.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { CatalogService, StockMovement_Kind } from "@protomesh/contracts/catalog/v1/catalog_pb";
import {
  ProductChanged_Change,
  ProductChangedSchema,
  StockLowSchema,
} from "@protomesh/contracts/catalog/v1/events_pb";
import { assertCode, gatewayClient, type Mesh, startMesh, waitUntil } from "@protomesh/testkit";
import { connect } from "nats";
import { makeAdmin, signedIn } from "../../user/test/helpers.ts";
import { catalogDb, forged, type MeshCatalog, meshCatalog } from "./helpers.ts";

let mesh: Mesh;
let internal: MeshCatalog;
let admin: Awaited<ReturnType<typeof signedIn>>;
let shopper: Awaited<ReturnType<typeof signedIn>>;
let asAdmin: ReturnType<typeof gatewayClient<typeof CatalogService>>;
let asShopper: ReturnType<typeof gatewayClient<typeof CatalogService>>;
let anonymous: ReturnType<typeof gatewayClient<typeof CatalogService>>;

before(async () => {
  mesh = await startMesh({
    services: ["auth", "user", "catalog"],
    env: { catalog: { CATALOG_SEED_DEMO: "false" } },
  });
  internal = meshCatalog(mesh);
  [admin, shopper] = await Promise.all([signedIn(mesh, "Ada Admin"), signedIn(mesh, "Sam Shopper")]);
  await makeAdmin(mesh, admin);
  asAdmin = gatewayClient(CatalogService, mesh.url, "connect-json", () => admin.token);
  asShopper = gatewayClient(CatalogService, mesh.url, "connect-json", () => shopper.token);
  anonymous = gatewayClient(CatalogService, mesh.url, "connect-json");
});
after(async () => {
  internal?.close();
  await mesh?.stop();
});

const fields = (name: string, over: Record<string, unknown> = {}) => ({
  name,
  description: "A sturdy thing",
  category: "gear",
  price: { currency: "EUR", amountMinor: 2500n },
  lowStockThreshold: 0,
  ...over,
});

async function create(name: string, stock = 10, over: Record<string, unknown> = {}) {
  const { product } = await asAdmin.createProduct({ product: fields(name, over), initialStock: stock });
  assert.ok(product);
  return product;
}

/** The events of the CATALOG stream about one product, decoded. */
async function catalogEvents(productId: string) {
  const nc = await connect({ servers: mesh.nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.info("CATALOG");
    const events: Array<{ subject: string; change?: ProductChanged_Change; stock: number }> = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage("CATALOG", { seq });
      if (m.subject === "catalog.product.changed") {
        const e = fromBinary(ProductChangedSchema, m.data);
        if (e.product?.id === productId)
          events.push({ subject: m.subject, change: e.change, stock: e.product.stock });
      } else {
        const e = fromBinary(StockLowSchema, m.data);
        if (e.productId === productId) events.push({ subject: m.subject, stock: e.stock });
      }
    }
    return events;
  } finally {
    await nc.close();
  }
}

test("an admin creates a product; anyone reads it, through the gateway, without a token", async () => {
  const created = await create("Walnut Desk Organiser", 7, { imageUrl: "https://img.example/organiser.png" });
  assert.equal(created.version, 1n);
  assert.equal(created.stock, 7);
  const { product } = await anonymous.getProduct({ productId: created.id });
  assert.deepEqual(product, created);
  assert.deepEqual([product?.price?.currency, product?.price?.amountMinor], ["EUR", 2500n]);
  await assertCode(anonymous.getProduct({ productId: randomUUID() }), Code.NotFound);
});

test("two admins update from the same version: one wins, the other gets ABORTED and changes nothing", async () => {
  const p = await create("Oak Shelf");
  const results = await Promise.allSettled([
    asAdmin.updateProduct({
      productId: p.id,
      product: { name: "Oak Shelf, large" },
      updateMask: { paths: ["name"] },
      expectedVersion: 1n,
    }),
    asAdmin.updateProduct({
      productId: p.id,
      product: { price: { currency: "EUR", amountMinor: 9900n } },
      updateMask: { paths: ["price"] },
      expectedVersion: 1n,
    }),
  ]);
  const won = results.filter((r) => r.status === "fulfilled");
  const lost = results.filter((r) => r.status === "rejected");
  assert.equal(won.length, 1);
  assert.equal(lost.length, 1);
  assert.equal((lost[0] as PromiseRejectedResult).reason.code, Code.Aborted);
  const { product } = await anonymous.getProduct({ productId: p.id });
  assert.equal(product?.version, 2n);
  const nameChanged = product?.name === "Oak Shelf, large";
  const priceChanged = product?.price?.amountMinor === 9900n;
  assert.ok(nameChanged !== priceChanged, "exactly one of the two changes was applied");

  // Only the masked field changes; the unmasked values sent along are ignored.
  const { product: next } = await asAdmin.updateProduct({
    productId: p.id,
    product: { description: "Solid oak, oiled", name: "ignored" },
    updateMask: { paths: ["description"] },
    expectedVersion: 2n,
  });
  assert.equal(next?.description, "Solid oak, oiled");
  assert.equal(next?.name, product?.name);
  assert.equal(next?.version, 3n);
  assert.ok((next?.updateTime?.seconds ?? 0n) >= (product?.updateTime?.seconds ?? 0n));

  await assertCode(
    asAdmin.updateProduct({
      productId: randomUUID(),
      product: { name: "x" },
      updateMask: { paths: ["name"] },
      expectedVersion: 1n,
    }),
    Code.NotFound,
  );
});

test("updates refuse a price in another currency, a blank name and unknown paths, changing nothing", async () => {
  const p = await create("Brass Lamp");
  const cases: Array<[string, Parameters<typeof asAdmin.updateProduct>[0], RegExp]> = [
    [
      "USD",
      { product: { price: { currency: "USD", amountMinor: 100n } }, updateMask: { paths: ["price"] } },
      /product\.price\.currency: .*EUR/,
    ],
    ["no price", { product: {}, updateMask: { paths: ["price"] } }, /^product\.price: /],
    ["blank name", { product: { name: "  " }, updateMask: { paths: ["name"] } }, /^product\.name: /],
    ["unknown path", { product: { name: "X" }, updateMask: { paths: ["stock"] } }, /^update_mask/],
    [
      "long name",
      { product: { name: "n".repeat(201) }, updateMask: { paths: ["name"] } },
      /^product\.name: /,
    ],
  ];
  for (const [what, req, field] of cases) {
    const err = await assertCode(
      asAdmin.updateProduct({ ...req, productId: p.id, expectedVersion: 1n }),
      Code.InvalidArgument,
      what,
    );
    assert.match(err.rawMessage, field, what);
  }
  const { product } = await anonymous.getProduct({ productId: p.id });
  assert.deepEqual(product, p, "nothing changed");
});

test("a deleted product leaves the shop but keeps its reservations; deleting again succeeds", async () => {
  const p = await create("Linen Apron", 5);
  const orderId = randomUUID();
  await internal.reserveStock({ orderId, lines: [{ productId: p.id, quantity: 2 }] });
  await assertCode(
    asAdmin.deleteProduct({ productId: p.id, expectedVersion: 7n }),
    Code.Aborted,
    "stale version",
  );
  await asAdmin.deleteProduct({ productId: p.id, expectedVersion: 1n });
  await asAdmin.deleteProduct({ productId: p.id });
  await assertCode(anonymous.getProduct({ productId: p.id }), Code.NotFound, "get");
  const listed = await anonymous.listProducts({ query: "linen apron" });
  assert.ok(!listed.products.some((x) => x.id === p.id), "not listed");
  await assertCode(
    internal.reserveStock({ orderId: randomUUID(), lines: [{ productId: p.id, quantity: 1 }] }),
    Code.NotFound,
    "reserve",
  );
  await assertCode(
    asAdmin.updateProduct({
      productId: p.id,
      product: { name: "x" },
      updateMask: { paths: ["name"] },
      expectedVersion: 2n,
    }),
    Code.NotFound,
    "update",
  );
  await internal.commitStock({ orderId });
  await internal.releaseStock({ orderId });
  const [row] = await catalogDb<{ stock: number }>(mesh, "SELECT stock FROM products WHERE id = $1", [p.id]);
  assert.equal(row?.stock, 5, "the existing order's units still came back");
  await assertCode(asAdmin.deleteProduct({ productId: randomUUID() }), Code.NotFound, "unknown");
});

test("stock adjustments by delta or count are in the ledger with reason and admin; never below zero", async () => {
  const p = await create("Clay Planter", 10);
  const down = await asAdmin.adjustStock({
    productId: p.id,
    change: { case: "delta", value: -4 },
    reason: "broken in storage",
  });
  assert.equal(down.product?.stock, 6);
  const counted = await asAdmin.adjustStock({
    productId: p.id,
    change: { case: "setTo", value: 20 },
    reason: "inventory count",
  });
  assert.equal(counted.product?.stock, 20);
  const err = await assertCode(
    asAdmin.adjustStock({ productId: p.id, change: { case: "delta", value: -21 }, reason: "too many" }),
    Code.FailedPrecondition,
  );
  assert.match(err.rawMessage, /below zero/);
  await internal.reserveStock({ orderId: randomUUID(), lines: [{ productId: p.id, quantity: 3 }] });
  await assertCode(
    asAdmin.adjustStock({ productId: p.id, change: { case: "delta", value: 0 }, reason: "nothing" }),
    Code.InvalidArgument,
  );
  await assertCode(
    asAdmin.adjustStock({ productId: p.id, change: { case: "delta", value: 1 }, reason: "" }),
    Code.InvalidArgument,
  );
  await assertCode(
    asAdmin.adjustStock({ productId: randomUUID(), change: { case: "delta", value: 1 }, reason: "x" }),
    Code.NotFound,
  );

  const first = await asAdmin.listStockMovements({ productId: p.id, pageSize: 2 });
  const second = await asAdmin.listStockMovements({
    productId: p.id,
    pageSize: 2,
    pageToken: first.nextPageToken,
  });
  assert.equal(second.nextPageToken, "", "four movements, two pages");
  const all = [...first.movements, ...second.movements];
  assert.deepEqual(
    all.map((m) => [StockMovement_Kind[m.kind], m.delta, m.stockAfter, m.reason]),
    [
      ["RESERVATION", -3, 17, ""],
      ["ADJUSTMENT", 14, 20, "inventory count"],
      ["ADJUSTMENT", -4, 6, "broken in storage"],
      ["INITIAL", 10, 10, ""],
    ],
  );
  assert.equal(all[1]?.actorId, admin.userId, "the admin who counted");
  assert.ok(all[0]?.orderId, "a reservation names its order");
  await assertCode(
    asAdmin.listStockMovements({ productId: p.id, pageToken: forged(first.nextPageToken) }),
    Code.InvalidArgument,
    "forged token",
  );
  const other = await create("Other Planter");
  await assertCode(
    asAdmin.listStockMovements({ productId: other.id, pageToken: first.nextPageToken }),
    Code.InvalidArgument,
    "a token of another product",
  );
});

test("ProductChanged for every admin change, StockLow once per crossing of the threshold", async () => {
  const p = await create("Ceramic Pour-Over", 8, { lowStockThreshold: 5 });
  const reserve = (quantity: number) =>
    internal.reserveStock({ orderId: randomUUID(), lines: [{ productId: p.id, quantity }] });
  await reserve(2); // 6: above
  await reserve(1); // 5: crossing
  await reserve(1); // 4: already below
  await asAdmin.adjustStock({ productId: p.id, change: { case: "delta", value: 10 }, reason: "delivery" }); // 14
  await asAdmin.adjustStock({ productId: p.id, change: { case: "setTo", value: 3 }, reason: "count" }); // crossing
  await asAdmin.updateProduct({
    productId: p.id,
    product: { name: "Ceramic Pour-Over Dripper" },
    updateMask: { paths: ["name"] },
    expectedVersion: 3n,
  });
  await asAdmin.deleteProduct({ productId: p.id });
  const events = await waitUntil(
    async () => {
      const e = await catalogEvents(p.id);
      return e.length >= 7 ? e : undefined;
    },
    10_000,
    "the product's events",
  );
  // Each kind in order (events of one transaction may be published in either order).
  const of = (subject: string) => events.filter((e) => e.subject === subject);
  assert.deepEqual(
    of("catalog.product.changed").map((e) => [ProductChanged_Change[e.change ?? 0], e.stock]),
    [
      ["CREATED", 8],
      ["STOCK_ADJUSTED", 14],
      ["STOCK_ADJUSTED", 3],
      ["UPDATED", 3],
      ["DELETED", 3],
    ],
  );
  assert.deepEqual(
    of("catalog.stock.low").map((e) => e.stock),
    [5, 3],
    "at the two crossings only",
  );
});

test("shoppers may read but not manage; the stock methods are not routed by the gateway", async () => {
  const p = await create("Felt Coaster");
  const calls = [
    ["CreateProduct", (c: typeof asShopper) => c.createProduct({ product: fields("Nope"), initialStock: 1 })],
    [
      "UpdateProduct",
      (c: typeof asShopper) =>
        c.updateProduct({
          productId: p.id,
          product: { name: "Nope" },
          updateMask: { paths: ["name"] },
          expectedVersion: 1n,
        }),
    ],
    ["DeleteProduct", (c: typeof asShopper) => c.deleteProduct({ productId: p.id })],
    [
      "AdjustStock",
      (c: typeof asShopper) =>
        c.adjustStock({ productId: p.id, change: { case: "delta", value: 5 }, reason: "mine" }),
    ],
    ["ListStockMovements", (c: typeof asShopper) => c.listStockMovements({ productId: p.id })],
  ] as const;
  for (const [name, call] of calls) {
    await assertCode(call(asShopper), Code.PermissionDenied, `${name} as a user`);
    await assertCode(call(anonymous), Code.Unauthenticated, `${name} without a token`);
  }
  assert.deepEqual((await anonymous.getProduct({ productId: p.id })).product, p, "nothing changed");

  for (const method of ["ReserveStock", "ReleaseStock", "CommitStock"]) {
    const res = await fetch(`${mesh.url}/protomesh.catalog.v1.CatalogService/${method}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${admin.token}` },
      body: JSON.stringify({ orderId: randomUUID(), lines: [{ productId: p.id, quantity: 1 }] }),
    });
    assert.notEqual(res.status, 200, method);
    await res.body?.cancel();
  }
  assert.equal((await anonymous.getProduct({ productId: p.id })).product?.stock, 10);
});

test("bad products are INVALID_ARGUMENT naming the field, and nothing is written", async () => {
  const before = await catalogDb<{ n: number }>(mesh, "SELECT count(*)::int AS n FROM products");
  const cases: Array<[string, Record<string, unknown>, number, RegExp]> = [
    [
      "wrong currency",
      { price: { currency: "USD", amountMinor: 100n } },
      1,
      /^product\.price\.currency: must be EUR/,
    ],
    ["no price", { price: undefined }, 1, /^product\.price: /],
    [
      "negative price",
      { price: { currency: "EUR", amountMinor: -1n } },
      1,
      /^product\.price\.amount_minor: /,
    ],
    ["oversized name", { name: "x".repeat(201) }, 1, /^product\.name: /],
    ["empty name", { name: "" }, 1, /^product\.name: /],
    ["NUL in description", { description: "a\0b" }, 1, /^product\.description: /],
    ["oversized description", { description: "d".repeat(5001) }, 1, /^product\.description: /],
    ["bad category", { category: "Books & More" }, 1, /^product\.category: /],
    ["http image", { imageUrl: "http://img.example/a.png" }, 1, /^product\.image_url: /],
    ["negative stock", {}, -1, /^initial_stock: /],
  ];
  for (const [what, over, stock, field] of cases) {
    const err = await assertCode(
      asAdmin.createProduct({ product: fields("Bad", over), initialStock: stock }),
      Code.InvalidArgument,
      what,
    );
    assert.match(err.rawMessage, field, what);
  }
  assert.deepEqual(await catalogDb(mesh, "SELECT count(*)::int AS n FROM products"), before);
});
