// No oversell through the whole mesh: many buyers at once, through the gateway, against little
// stock; and overlapping multi-line orders neither deadlock nor take part of their lines.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type Order, OrderStatus } from "@protomesh/contracts/orders/v1/orders_pb";
import type { Mesh } from "@protomesh/testkit";
import {
  heldUnits,
  type MeshCatalog,
  meshCatalog,
  newKey,
  newProduct,
  ordersDb,
  outcome,
  type Shopper,
  shoppers,
  startShop,
  stockOf,
  tally,
} from "./helpers.ts";

let mesh: Mesh;
let catalog: MeshCatalog;
let buyers: Shopper[];
before(async () => {
  // Two hashing threads: 50 sign-ups and sign-ins are most of this file's run time.
  mesh = await startShop({ auth: { BCRYPT_THREADS: "2" } });
  catalog = meshCatalog(mesh);
  buyers = await shoppers(mesh, 50);
});
after(async () => {
  catalog?.close();
  await mesh?.stop();
});

/** Units of a product in live (not cancelled) orders, as orders stores them. */
async function unitsInLiveOrders(productId: string): Promise<number> {
  const [row] = await ordersDb<{ n: number }>(
    mesh,
    `SELECT coalesce(sum(l.quantity), 0)::int AS n FROM order_lines l JOIN orders o ON o.id = l.order_id
      WHERE l.product_id = $1 AND o.status NOT IN ('draft', 'cancelled')`,
    [productId],
  );
  return row?.n ?? Number.NaN;
}

test("200 concurrent BuyNow of a product with stock 10 from 50 users: exactly 10 orders, the rest FAILED_PRECONDITION", async () => {
  const productId = await newProduct(catalog, 10);
  const placed: Order[] = [];
  const outcomes = await Promise.all(
    Array.from({ length: 200 }, (_, i) => {
      const buyer = buyers[i % buyers.length] as Shopper;
      const call = buyer.orders.buyNow({ productId, quantity: 1, idempotencyKey: newKey() });
      return outcome(call.then((r) => r.order && placed.push(r.order)));
    }),
  );
  assert.deepEqual(tally(outcomes), { OK: 10, FailedPrecondition: 190 });
  assert.equal(await stockOf(catalog, productId), 0);
  assert.equal(await unitsInLiveOrders(productId), 10, "stock + units in live orders = the initial 10");
  assert.equal(await heldUnits(mesh, productId), 10, "catalog holds exactly the ordered units");
  assert.ok(placed.every((o) => o.status === OrderStatus.PENDING));
  const drafts = await ordersDb(mesh, "SELECT 1 FROM orders WHERE status = 'draft'");
  assert.equal(drafts.length, 0, "no draft left behind by the refused calls");
  const committed = await ordersDb<{ stock: string }>(mesh, "SELECT stock FROM orders WHERE id = ANY($1)", [
    placed.map((o) => o.id),
  ]);
  assert.ok(
    committed.every((r) => r.stock === "committed"),
    "every placed order's stock is committed",
  );
});

test("overlapping orders A+B and B+A at once: no deadlock, and each takes both lines or neither", async () => {
  // B is the scarce one: an order that gets no B must not keep any A.
  const a = await newProduct(catalog, 10);
  const b = await newProduct(catalog, 5);
  const outcomes = await Promise.all(
    Array.from({ length: 40 }, (_, i) => {
      const buyer = buyers[i % buyers.length] as Shopper;
      const lines = [
        { productId: a, quantity: 1 },
        { productId: b, quantity: 1 },
      ];
      if (i % 2 === 1) lines.reverse();
      return outcome(buyer.orders.placeOrder({ lines, idempotencyKey: newKey() }));
    }),
  );
  assert.deepEqual(tally(outcomes), { OK: 5, FailedPrecondition: 35 });
  assert.equal(await stockOf(catalog, b), 0);
  assert.equal(await stockOf(catalog, a), 5, "failed orders kept none of A");
  assert.equal(await unitsInLiveOrders(a), 5);
  assert.equal(await unitsInLiveOrders(b), 5);
  const split = await ordersDb(
    mesh,
    `SELECT o.id FROM orders o JOIN order_lines l ON l.order_id = o.id
      WHERE l.product_id = ANY($1) AND o.status <> 'draft' GROUP BY o.id HAVING count(*) <> 2`,
    [[a, b]],
  );
  assert.deepEqual(split, [], "every order holds both lines");
});
