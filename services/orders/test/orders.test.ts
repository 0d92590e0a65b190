// Orders through the gateway: placing with a price snapshot, idempotency keys, bad input, the
// state machine, who sees what, listing, cancellation, and account deletion.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { UserDeletedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import {
  OrderCancelledSchema,
  OrderPlacedSchema,
  OrderStatusChangedSchema,
} from "@protomesh/contracts/orders/v1/events_pb";
import { type Order, OrderStatus } from "@protomesh/contracts/orders/v1/orders_pb";
import { assertCode, type Mesh, publishEvent, waitUntil } from "@protomesh/testkit";
import {
  json,
  type MeshCatalog,
  makeAdmin,
  meshCatalog,
  newKey,
  newProduct,
  ordersDb,
  ordersEvents,
  type Shopper,
  shoppers,
  startShop,
  stockOf,
  unverifiedShopper,
} from "./helpers.ts";

let mesh: Mesh;
let catalog: MeshCatalog;
let boss: Shopper;
let people: Shopper[];
before(async () => {
  // A fast sweeper: cancellations of deleted accounts return their stock through it.
  mesh = await startShop({ orders: { ORDERS_SWEEP_INTERVAL_S: "1" } });
  catalog = meshCatalog(mesh);
  // Signed up together: sign-ups are most of this file's run time.
  people = await shoppers(mesh, 18);
  boss = await makeAdmin(mesh, next());
});
after(async () => {
  catalog?.close();
  await mesh?.stop();
});

/** A verified shopper of this file's own, used by no other test. */
function next(): Shopper {
  const one = people.pop();
  if (!one) throw new Error("more shoppers needed: raise the count in before()");
  return one;
}

/** Rows orders keeps for a user, drafts included. */
const rowsOf = (userId: string) =>
  ordersDb(mesh, "SELECT id, status FROM orders WHERE user_id = $1", [userId]);

/** A placed order of one unit of a fresh product (stock 5). */
async function placed(buyer: Shopper): Promise<{ order: Order; productId: string }> {
  const productId = await newProduct(catalog, 5);
  const { order } = await buyer.orders.buyNow({ productId, quantity: 1, idempotencyKey: newKey() });
  assert.ok(order);
  return { order, productId };
}

/** Moves an order along the state machine as an admin. */
async function moveTo(order: Order, ...statuses: OrderStatus[]): Promise<Order> {
  let current = order;
  for (const status of statuses) {
    const res = await boss.orders.updateOrderStatus({ orderId: order.id, status });
    assert.ok(res.order);
    current = res.order;
  }
  return current;
}

test("PlaceOrder stores a PENDING order with catalog's names and prices, takes the stock and emits OrderPlaced", async () => {
  const ada = next();
  const book = await newProduct(catalog, 10, { name: "A book", priceMinor: 1999n });
  const pen = await newProduct(catalog, 10, { name: "A pen", priceMinor: 250n });
  const { order } = await ada.orders.placeOrder({
    lines: [
      { productId: book, quantity: 2 },
      { productId: pen, quantity: 3 },
    ],
    idempotencyKey: newKey(),
  });
  assert.ok(order);
  assert.equal(order.status, OrderStatus.PENDING);
  assert.equal(order.userId, ada.userId);
  assert.deepEqual(
    order.lines.map((l) => [
      l.productId,
      l.name,
      l.quantity,
      l.unitPrice?.amountMinor,
      l.lineTotal?.amountMinor,
    ]),
    [
      [book, "A book", 2, 1999n, 3998n],
      [pen, "A pen", 3, 250n, 750n],
    ],
  );
  assert.deepEqual([order.total?.currency, order.total?.amountMinor], ["EUR", 4748n]);
  assert.equal(await stockOf(catalog, book), 8);
  assert.equal(await stockOf(catalog, pen), 7);

  assert.deepEqual(json((await ada.orders.getOrder({ orderId: order.id })).order), json(order));
  const [row] = await ordersDb<{ stock: string; email: string }>(
    mesh,
    "SELECT stock, email FROM orders WHERE id = $1",
    [order.id],
  );
  assert.deepEqual(row, { stock: "committed", email: ada.email }, "catalog committed the stock");

  const event = await waitUntil(async () =>
    (await ordersEvents(mesh, OrderPlacedSchema)).find((e) => e.order?.id === order.id),
  );
  assert.equal(event.email, ada.email);
  assert.equal(event.order?.total?.amountMinor, 4748n);

  // The snapshot stays when the product changes or goes off sale later.
  const { product } = await catalog.getProduct({ productId: book });
  await catalog.updateProduct({
    productId: book,
    product: { name: "A dearer book", price: { currency: "EUR", amountMinor: 2999n } },
    updateMask: { paths: ["name", "price"] },
    expectedVersion: product?.version ?? 0n,
  });
  await catalog.deleteProduct({ productId: pen });
  assert.deepEqual(json((await ada.orders.getOrder({ orderId: order.id })).order), json(order));
  const stored = await ordersDb<{ name: string; unit_price_minor: string }>(
    mesh,
    "SELECT name, unit_price_minor::text FROM order_lines WHERE order_id = $1 ORDER BY position",
    [order.id],
  );
  assert.deepEqual(stored, [
    { name: "A book", unit_price_minor: "1999" },
    { name: "A pen", unit_price_minor: "250" },
  ]);
});

test("the same idempotency key 5 times in parallel: one order, one stock decrement, five identical answers", async () => {
  const bo = next();
  const productId = await newProduct(catalog, 10);
  const idempotencyKey = newKey();
  const lines = [{ productId, quantity: 2 }];
  const answers = await Promise.all(
    Array.from({ length: 5 }, () => bo.orders.placeOrder({ lines, idempotencyKey })),
  );
  const first = json(answers[0]?.order);
  assert.ok(first);
  for (const a of answers) assert.deepEqual(json(a.order), first);
  assert.equal(await stockOf(catalog, productId), 8, "one decrement of 2");
  assert.equal((await rowsOf(bo.userId)).length, 1, "one order");

  // The same key later, as BuyNow of the same line: the same order again.
  const buy = await bo.orders.buyNow({ productId, quantity: 2, idempotencyKey });
  assert.deepEqual(json(buy.order), first);

  // The same key with other lines is refused, and changes nothing.
  const err = await assertCode(
    bo.orders.placeOrder({ lines: [{ productId, quantity: 3 }], idempotencyKey }),
    Code.InvalidArgument,
  );
  assert.match(err.rawMessage, /^idempotency_key: /);
  assert.equal(await stockOf(catalog, productId), 8);
  assert.equal((await rowsOf(bo.userId)).length, 1);

  // Keys belong to their user: another user's same key is another order.
  const cy = next();
  const theirs = await cy.orders.placeOrder({ lines, idempotencyKey });
  assert.notEqual(theirs.order?.id, answers[0]?.order?.id);
});

test("a user whose email is not verified cannot place orders (FAILED_PRECONDITION), and nothing is written", async () => {
  const fresh = await unverifiedShopper(mesh);
  const productId = await newProduct(catalog, 5);
  const err = await assertCode(
    fresh.orders.buyNow({ productId, quantity: 1, idempotencyKey: newKey() }),
    Code.FailedPrecondition,
  );
  assert.match(err.rawMessage, /verify your email/);
  await assertCode(
    fresh.orders.placeOrder({ lines: [{ productId, quantity: 1 }], idempotencyKey: newKey() }),
    Code.FailedPrecondition,
  );
  assert.deepEqual(await rowsOf(fresh.userId), []);
  assert.equal(await stockOf(catalog, productId), 5);
  assert.deepEqual((await fresh.orders.listMyOrders({})).orders, [], "reading needs no verified email");
});

test("bad input is INVALID_ARGUMENT naming the field (NOT_FOUND for an unknown product), and nothing is written", async () => {
  const dee = next();
  const productId = await newProduct(catalog, 10);
  const other = await newProduct(catalog, 10);
  const key = newKey();
  const cases: [string, Parameters<Shopper["orders"]["placeOrder"]>[0], RegExp][] = [
    [
      "zero quantity",
      { lines: [{ productId, quantity: 0 }], idempotencyKey: key },
      /^lines\[0\]\.quantity: /,
    ],
    [
      "negative quantity",
      { lines: [{ productId, quantity: -3 }], idempotencyKey: key },
      /^lines\[0\]\.quantity: /,
    ],
    [
      "too many units",
      { lines: [{ productId, quantity: 1001 }], idempotencyKey: key },
      /^lines\[0\]\.quantity: /,
    ],
    [
      "101 lines",
      {
        lines: Array.from({ length: 101 }, () => ({ productId: crypto.randomUUID(), quantity: 1 })),
        idempotencyKey: key,
      },
      /^lines: /,
    ],
    ["no lines", { lines: [], idempotencyKey: key }, /^lines: /],
    [
      "a product twice",
      {
        lines: [
          { productId, quantity: 1 },
          { productId: other, quantity: 1 },
          { productId: productId.toUpperCase(), quantity: 2 },
        ],
        idempotencyKey: key,
      },
      /^lines\[2\]\.product_id: .*listed more than once/,
    ],
    [
      "a bad product id",
      { lines: [{ productId: "nope", quantity: 1 }], idempotencyKey: key },
      /^lines\[0\]\.product_id: /,
    ],
    ["a short key", { lines: [{ productId, quantity: 1 }], idempotencyKey: "short" }, /^idempotency_key: /],
    [
      "a key with spaces",
      { lines: [{ productId, quantity: 1 }], idempotencyKey: "has spaces in it" },
      /^idempotency_key: /,
    ],
    [
      "a long key",
      { lines: [{ productId, quantity: 1 }], idempotencyKey: "k".repeat(65) },
      /^idempotency_key: /,
    ],
  ];
  for (const [what, req, field] of cases) {
    const err = await assertCode(dee.orders.placeOrder(req), Code.InvalidArgument, what);
    assert.match(err.rawMessage, field, what);
  }
  const buy = await assertCode(
    dee.orders.buyNow({ productId, quantity: 0, idempotencyKey: key }),
    Code.InvalidArgument,
    "BuyNow of nothing",
  );
  assert.match(buy.rawMessage, /^quantity: /);

  const gone = await newProduct(catalog, 10);
  await catalog.deleteProduct({ productId: gone });
  const deleted = await assertCode(
    dee.orders.buyNow({ productId: gone, quantity: 1, idempotencyKey: key }),
    Code.NotFound,
    "a deleted product",
  );
  assert.match(deleted.rawMessage, new RegExp(gone));

  const unknown = crypto.randomUUID();
  const missing = await assertCode(
    dee.orders.placeOrder({
      lines: [
        { productId, quantity: 1 },
        { productId: unknown, quantity: 1 },
      ],
      idempotencyKey: key,
    }),
    Code.NotFound,
  );
  assert.match(missing.rawMessage, new RegExp(unknown));

  assert.deepEqual(await rowsOf(dee.userId), [], "no order, no draft");
  assert.equal(await stockOf(catalog, productId), 10, "no stock taken");
  assert.equal(await stockOf(catalog, other), 10);
});

test("an order beyond the stock is FAILED_PRECONDITION naming the product; the key works again once stock is back", async () => {
  const eve = next();
  const fin = next();
  const productId = await newProduct(catalog, 3);
  const first = (await fin.orders.buyNow({ productId, quantity: 1, idempotencyKey: newKey() })).order;
  assert.ok(first);
  const idempotencyKey = newKey();
  const err = await assertCode(
    eve.orders.buyNow({ productId, quantity: 3, idempotencyKey }),
    Code.FailedPrecondition,
  );
  assert.match(err.rawMessage, new RegExp(productId));
  assert.deepEqual(await rowsOf(eve.userId), [], "nothing written");
  assert.equal(await stockOf(catalog, productId), 2);

  await fin.orders.cancelOrder({ orderId: first.id });
  const { order } = await eve.orders.buyNow({ productId, quantity: 3, idempotencyKey });
  assert.equal(order?.status, OrderStatus.PENDING);
  assert.equal(await stockOf(catalog, productId), 0);
});

test("every illegal move is FAILED_PRECONDITION naming both statuses; legal ones emit OrderStatusChanged", async () => {
  const fay = next();
  const { PENDING, CONFIRMED, SHIPPED, DELIVERED, CANCELLED } = OrderStatus;
  const legal = new Set([
    `${PENDING}>${CONFIRMED}`,
    `${PENDING}>${CANCELLED}`,
    `${CONFIRMED}>${SHIPPED}`,
    `${CONFIRMED}>${CANCELLED}`,
    `${SHIPPED}>${DELIVERED}`,
  ]);
  const paths: Record<number, OrderStatus[]> = {
    [PENDING]: [],
    [CONFIRMED]: [CONFIRMED],
    [SHIPPED]: [CONFIRMED, SHIPPED],
    [DELIVERED]: [CONFIRMED, SHIPPED, DELIVERED],
    [CANCELLED]: [CANCELLED],
  };
  const all = [PENDING, CONFIRMED, SHIPPED, DELIVERED, CANCELLED];
  for (const from of all) {
    for (const to of all) {
      const order = await moveTo((await placed(fay)).order, ...(paths[from] ?? []));
      assert.equal(order.status, from);
      if (from === to) {
        const same = await boss.orders.updateOrderStatus({ orderId: order.id, status: to });
        assert.deepEqual(json(same.order), json(order), `${OrderStatus[from]} to itself changes nothing`);
      } else if (legal.has(`${from}>${to}`)) {
        assert.equal((await moveTo(order, to)).status, to);
      } else {
        const err = await assertCode(
          boss.orders.updateOrderStatus({ orderId: order.id, status: to }),
          Code.FailedPrecondition,
          `${OrderStatus[from]} to ${OrderStatus[to]}`,
        );
        assert.equal(err.rawMessage, `cannot move an order from ${OrderStatus[from]} to ${OrderStatus[to]}`);
        assert.equal((await fay.orders.getOrder({ orderId: order.id })).order?.status, from, "unchanged");
      }
    }
  }

  const { order } = await placed(fay);
  await moveTo(order, CONFIRMED, SHIPPED);
  const changes = await waitUntil(async () => {
    const found = (await ordersEvents(mesh, OrderStatusChangedSchema)).filter(
      (e) => e.order?.id === order.id,
    );
    return found.length === 2 ? found : undefined;
  });
  assert.deepEqual(
    changes.map((e) => [e.previousStatus, e.order?.status, e.email]),
    [
      [PENDING, CONFIRMED, fay.email],
      [CONFIRMED, SHIPPED, fay.email],
    ],
  );
});

test("two admins moving one order at once: one move applies, the other is refused", async () => {
  const gus = next();
  const { order } = await placed(gus);
  await moveTo(order, OrderStatus.CONFIRMED);
  const [ship, cancel] = await Promise.allSettled([
    boss.orders.updateOrderStatus({ orderId: order.id, status: OrderStatus.SHIPPED }),
    boss.orders.updateOrderStatus({ orderId: order.id, status: OrderStatus.CANCELLED }),
  ]);
  const won = [ship, cancel].filter((r) => r.status === "fulfilled");
  assert.equal(won.length, 1, "exactly one move applied");
  const final = (await gus.orders.getOrder({ orderId: order.id })).order?.status;
  assert.equal(final, ship.status === "fulfilled" ? OrderStatus.SHIPPED : OrderStatus.CANCELLED);
});

test("the buyer cancels: stock back, OrderCancelled; again is a no-op; a shipped order cannot be cancelled", async () => {
  const hal = next();
  const { order, productId } = await placed(hal);
  assert.equal(await stockOf(catalog, productId), 4);
  const { order: cancelled } = await hal.orders.cancelOrder({ orderId: order.id, reason: "changed my mind" });
  assert.equal(cancelled?.status, OrderStatus.CANCELLED);
  assert.equal(cancelled?.cancelReason, "changed my mind");
  assert.equal(await stockOf(catalog, productId), 5, "released at once");
  const event = await waitUntil(async () =>
    (await ordersEvents(mesh, OrderCancelledSchema)).find((e) => e.order?.id === order.id),
  );
  assert.deepEqual(
    [event.cancelledBy, event.previousStatus, event.email],
    ["buyer", OrderStatus.PENDING, hal.email],
  );

  const again = await hal.orders.cancelOrder({ orderId: order.id, reason: "twice" });
  assert.deepEqual(json(again.order), json(cancelled));
  assert.equal(await stockOf(catalog, productId), 5, "released once");

  const shipped = await moveTo((await placed(hal)).order, OrderStatus.CONFIRMED, OrderStatus.SHIPPED);
  const err = await assertCode(hal.orders.cancelOrder({ orderId: shipped.id }), Code.FailedPrecondition);
  assert.match(err.rawMessage, /SHIPPED/);
});

test("an admin's cancellation returns the stock and emits OrderCancelled by the admin", async () => {
  const ida = next();
  const { order, productId } = await placed(ida);
  const moved = await moveTo(order, OrderStatus.CONFIRMED);
  const { order: cancelled } = await boss.orders.updateOrderStatus({
    orderId: moved.id,
    status: OrderStatus.CANCELLED,
    reason: "payment failed",
  });
  assert.equal(cancelled?.cancelReason, "payment failed");
  assert.equal(await stockOf(catalog, productId), 5);
  const event = await waitUntil(async () =>
    (await ordersEvents(mesh, OrderCancelledSchema)).find((e) => e.order?.id === order.id),
  );
  assert.deepEqual([event.cancelledBy, event.previousStatus], ["admin", OrderStatus.CONFIRMED]);
});

test("a user cannot read, cancel or list another user's orders (NOT_FOUND), nor use admin methods", async () => {
  const jo = next();
  const kim = next();
  const { order, productId } = await placed(jo);
  await assertCode(kim.orders.getOrder({ orderId: order.id }), Code.NotFound, "read");
  await assertCode(kim.orders.cancelOrder({ orderId: order.id }), Code.NotFound, "cancel");
  assert.equal((await jo.orders.getOrder({ orderId: order.id })).order?.status, OrderStatus.PENDING);
  assert.equal(await stockOf(catalog, productId), 4, "still reserved for Jo");
  assert.deepEqual((await kim.orders.listMyOrders({})).orders, []);
  await assertCode(kim.orders.getOrder({ orderId: crypto.randomUUID() }), Code.NotFound, "unknown id");

  await assertCode(kim.orders.listOrders({}), Code.PermissionDenied);
  await assertCode(
    kim.orders.updateOrderStatus({ orderId: order.id, status: OrderStatus.CANCELLED }),
    Code.PermissionDenied,
  );
});

test("ListMyOrders pages newest first through the caller's orders only; tokens are bound to their user", async () => {
  const lu = next();
  const mo = next();
  const mine: string[] = [];
  for (let i = 0; i < 5; i++) mine.push((await placed(lu)).order.id);
  await placed(mo);

  const seen: string[] = [];
  let pageToken = "";
  for (let page = 0; page < 10; page++) {
    const res = await lu.orders.listMyOrders({ pageSize: 2, pageToken });
    seen.push(...res.orders.map((o) => o.id));
    if (page === 0) {
      const stolen = await assertCode(
        mo.orders.listMyOrders({ pageSize: 2, pageToken: res.nextPageToken }),
        Code.InvalidArgument,
      );
      assert.match(stolen.rawMessage, /^page_token: /);
    }
    pageToken = res.nextPageToken;
    if (!pageToken) break;
  }
  assert.deepEqual(seen, [...mine].reverse());
  await assertCode(lu.orders.listMyOrders({ pageToken: "garbage" }), Code.InvalidArgument);
});

test("ListOrders lets an admin filter by status and by user, with pages", async () => {
  const ned = next();
  const a = (await placed(ned)).order;
  const b = await moveTo((await placed(ned)).order, OrderStatus.CONFIRMED);
  const c = (await placed(ned)).order;

  const byUser = await boss.orders.listOrders({ userId: ned.userId });
  assert.deepEqual(
    byUser.orders.map((o) => o.id),
    [c.id, b.id, a.id],
  );
  const confirmed = await boss.orders.listOrders({ userId: ned.userId, status: OrderStatus.CONFIRMED });
  assert.deepEqual(
    confirmed.orders.map((o) => o.id),
    [b.id],
  );
  const first = await boss.orders.listOrders({ userId: ned.userId, pageSize: 2 });
  assert.equal(first.orders.length, 2);
  const second = await boss.orders.listOrders({
    userId: ned.userId,
    pageSize: 2,
    pageToken: first.nextPageToken,
  });
  assert.deepEqual(
    second.orders.map((o) => o.id),
    [a.id],
  );
  assert.equal(second.nextPageToken, "");
  // A token of one filter does not page another.
  await assertCode(
    boss.orders.listOrders({ pageSize: 2, pageToken: first.nextPageToken, status: OrderStatus.PENDING }),
    Code.InvalidArgument,
  );
});

test("UserDeleted anonymises the user's orders, cancels the open ones and returns their stock", async () => {
  const ola = next();
  const open = await placed(ola);
  const delivered = await moveTo(
    (await placed(ola)).order,
    OrderStatus.CONFIRMED,
    OrderStatus.SHIPPED,
    OrderStatus.DELIVERED,
  );
  const other = next();
  const kept = await placed(other);

  await publishEvent(mesh.nats.url, UserDeletedSchema, {
    userId: ola.userId,
    email: ola.email,
    occurTime: timestampNow(),
  });
  await waitUntil(async () => (await rowsOf(ola.userId)).length === 0, 10_000, "the orders anonymised");

  const rows = await ordersDb<{
    id: string;
    user_id: string | null;
    email: string;
    status: string;
    total_minor: string;
  }>(
    mesh,
    "SELECT id, user_id, email, status, total_minor::text FROM orders WHERE id = ANY($1) ORDER BY status",
    [[open.order.id, delivered.id]],
  );
  assert.deepEqual(
    rows.map((r) => [r.id, r.user_id, r.email, r.status, r.total_minor]),
    [
      [open.order.id, null, "", "cancelled", "1999"],
      [delivered.id, null, "", "delivered", "1999"],
    ],
    "kept for the shop, without the buyer",
  );
  const lines = await ordersDb(mesh, "SELECT 1 FROM order_lines WHERE order_id = $1", [delivered.id]);
  assert.equal(lines.length, 1, "lines kept");
  await waitUntil(
    async () => (await stockOf(catalog, open.productId)) === 5,
    10_000,
    "the open order's stock back",
  );
  const event = await waitUntil(async () =>
    (await ordersEvents(mesh, OrderCancelledSchema)).find((e) => e.order?.id === open.order.id),
  );
  assert.deepEqual([event.cancelledBy, event.email, event.order?.userId], ["system", "", ""]);

  // Their token outlives the account by minutes: it finds nothing.
  await assertCode(ola.orders.getOrder({ orderId: delivered.id }), Code.NotFound);
  assert.deepEqual((await ola.orders.listMyOrders({})).orders, []);
  // Someone else's order is untouched.
  assert.equal((await other.orders.getOrder({ orderId: kept.order.id })).order?.status, OrderStatus.PENDING);
  const listed = await boss.orders.listOrders({ status: OrderStatus.DELIVERED });
  assert.equal(listed.orders.find((o) => o.id === delivered.id)?.userId, "", "anonymised for admins too");
});
