// Whatever fails midway, orders and catalog converge without a person: orders crashing between
// ReserveStock and storing the order, catalog down before or during PlaceOrder, NATS down while
// orders are placed. Reservations live 3 s here, so expiry is part of the test.
import assert from "node:assert/strict";
import { after, before, beforeEach, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { Code } from "@connectrpc/connect";
import { OrderCancelledSchema, OrderPlacedSchema } from "@protomesh/contracts/orders/v1/events_pb";
import { OrderStatus, OrdersService } from "@protomesh/contracts/orders/v1/orders_pb";
import { freePort } from "@protomesh/devkit";
import { createServiceClient, type RunningService, startService } from "@protomesh/platform";
import { assertCode, failure, type Mesh, testLogger, waitUntil } from "@protomesh/testkit";
import { createOrdersService } from "../src/app.ts";
import { readOrdersConfig } from "../src/config.ts";
import {
  catalogState,
  heldUnits,
  type MeshCatalog,
  meshCatalog,
  newKey,
  newProduct,
  ordersDb,
  ordersEvents,
  type Shopper,
  shoppers,
  startShop,
  stockOf,
} from "./helpers.ts";

const TTL_S = 3;

let mesh: Mesh;
let catalog: MeshCatalog;
let buyers: Shopper[];
/** This test's own buyer. */
let buyer: Shopper;
before(async () => {
  mesh = await startShop({
    catalog: { RESERVATION_TTL_S: String(TTL_S), RESERVATION_EXPIRY_INTERVAL_S: "1" },
    // A draft grace far beyond the test: a crashed draft's stock comes back by catalog's expiry
    // alone, unless a test starts an orders replica of its own with a short grace.
    orders: { ORDERS_SWEEP_INTERVAL_S: "1", ORDERS_DRAFT_GRACE_S: "600" },
  });
  catalog = meshCatalog(mesh);
  buyers = await shoppers(mesh, 6);
});
beforeEach(() => {
  const next = buyers.pop();
  if (!next) throw new Error("more buyers needed: raise the count in before()");
  buyer = next;
});
after(async () => {
  catalog?.close();
  await mesh?.stop();
});

/**
 * Another orders replica on the same database, whose PlaceOrder runs `afterReserve` once
 * catalog reserved the stock; with a client that calls it directly as the buyer.
 */
async function hookedOrders(afterReserve: (orderId: string, self: RunningService) => Promise<void>) {
  const config = readOrdersConfig({ ...mesh.env.orders, PORT: "0" });
  let self: RunningService | undefined;
  const spec = createOrdersService(config, {
    afterReserve: async (orderId) => afterReserve(orderId, self as RunningService),
  });
  spec.log = testLogger("orders-hooked");
  self = await startService(spec);
  const client = createServiceClient(OrdersService, `127.0.0.1:${self.port}`, { defaultTimeoutMs: 15_000 });
  const running = self;
  return {
    client,
    async stop() {
      client.close();
      await running.stop();
    },
  };
}

/** The rows orders keeps for the buyer, drafts included. */
const rowsOfBuyer = () =>
  ordersDb<{ id: string; status: string }>(mesh, "SELECT id, status FROM orders WHERE user_id = $1", [
    buyer.userId,
  ]);

test("orders crashes between ReserveStock and storing the order: after the expiry the stock is back and no order exists", async () => {
  const productId = await newProduct(catalog, 5);
  let reservedFor = "";
  const hooked = await hookedOrders(async (orderId, self) => {
    reservedFor = orderId;
    await self.kill();
    // A crashed process goes no further.
    await new Promise(() => {});
  });
  try {
    const err = await failure(
      hooked.client.buyNow(
        { productId, quantity: 2, idempotencyKey: newKey() },
        { accessToken: buyer.token },
      ),
    );
    assert.ok([Code.Unavailable, Code.Canceled, Code.Internal].includes(err.code), Code[err.code]);
  } finally {
    hooked.client.close();
  }
  assert.ok(reservedFor, "the crash came after the reservation");
  assert.equal(await stockOf(catalog, productId), 3, "reserved for an order that was never stored");

  await waitUntil(async () => (await stockOf(catalog, productId)) === 5, 15_000, "the stock back by expiry");
  assert.equal(await heldUnits(mesh, productId), 0);
  await assertCode(buyer.orders.getOrder({ orderId: reservedFor }), Code.NotFound);
  assert.deepEqual((await buyer.orders.listMyOrders({})).orders, [], "no order shown");

  // orders comes back (here with a short draft grace): the draft left by the crash goes too,
  // and its order id is released in catalog, so a late ReserveStock for it would be refused.
  const replica = await mesh.start("orders", {
    env: { PORT: String(await freePort()), ORDERS_DRAFT_GRACE_S: "1" },
  });
  try {
    await waitUntil(async () => (await rowsOfBuyer()).length === 0, 15_000, "the draft deleted");
  } finally {
    await replica.stop();
  }
  assert.equal(await catalogState(mesh, reservedFor), "expired");
  assert.equal(await stockOf(catalog, productId), 5);
});

test("a retry with the key of a crashed call, after its reservation expired, places the order afresh", async () => {
  const productId = await newProduct(catalog, 5);
  const idempotencyKey = newKey();
  let crashed = "";
  const hooked = await hookedOrders(async (orderId, self) => {
    crashed = orderId;
    await self.kill();
    await new Promise(() => {});
  });
  try {
    await failure(
      hooked.client.buyNow({ productId, quantity: 1, idempotencyKey }, { accessToken: buyer.token }),
    );
  } finally {
    hooked.client.close();
  }
  await waitUntil(
    async () => (await catalogState(mesh, crashed)) === "expired",
    15_000,
    "the reservation expired",
  );

  const { order } = await buyer.orders.buyNow({ productId, quantity: 1, idempotencyKey });
  assert.equal(order?.status, OrderStatus.PENDING);
  assert.notEqual(order?.id, crashed, "a new order id: catalog refuses the expired one");
  assert.equal(await stockOf(catalog, productId), 4);
  const rows = await ordersDb(mesh, "SELECT status FROM orders WHERE user_id = $1 AND idempotency_key = $2", [
    buyer.userId,
    idempotencyKey,
  ]);
  assert.deepEqual(rows, [{ status: "pending" }], "one order for the key, the old draft gone");
});

test("catalog down during PlaceOrder: UNAVAILABLE, nothing shown; a retry with the same key places one order", async () => {
  const productId = await newProduct(catalog, 5);
  const idempotencyKey = newKey();
  await mesh.services.catalog?.kill();
  try {
    const err = await assertCode(
      buyer.orders.buyNow({ productId, quantity: 1, idempotencyKey }),
      Code.Unavailable,
    );
    assert.match(err.rawMessage, /same idempotency key/);
    assert.deepEqual((await buyer.orders.listMyOrders({})).orders, []);
  } finally {
    await mesh.start("catalog");
  }
  const [draft] = await rowsOfBuyer();
  assert.equal(draft?.status, "draft", "kept for the retry (or the sweeper)");

  const { order } = await waitUntil(
    () => buyer.orders.buyNow({ productId, quantity: 1, idempotencyKey }),
    15_000,
    "the retry placed",
  );
  assert.equal(order?.id, draft?.id, "the retry continued the same order");
  assert.equal(order?.status, OrderStatus.PENDING);
  assert.equal(await stockOf(catalog, productId), 4, "one unit taken, once");
  assert.equal((await rowsOfBuyer()).length, 1);
});

test("catalog goes down after reserving and stays down past the expiry: the order is cancelled by the system and the stock is back", async () => {
  const productId = await newProduct(catalog, 5);
  const hooked = await hookedOrders(async () => {
    await mesh.services.catalog?.kill();
  });
  let orderId = "";
  try {
    const { order } = await hooked.client.buyNow(
      { productId, quantity: 2, idempotencyKey: newKey() },
      { accessToken: buyer.token },
    );
    assert.equal(order?.status, OrderStatus.PENDING, "placed: its stock is reserved, not yet committed");
    orderId = order?.id ?? "";
    const [row] = await ordersDb<{ stock: string }>(mesh, "SELECT stock FROM orders WHERE id = $1", [
      orderId,
    ]);
    assert.equal(row?.stock, "reserved");
    // The scenario itself: catalog stays down until the reservation's time is over.
    await delay((TTL_S + 1) * 1000);
  } finally {
    await hooked.stop();
    await mesh.start("catalog");
  }

  const cancelled = await waitUntil(
    async () => {
      const { order } = await buyer.orders.getOrder({ orderId });
      return order?.status === OrderStatus.CANCELLED ? order : undefined;
    },
    15_000,
    "the order cancelled by the sweeper",
  );
  assert.equal(cancelled.cancelReason, "stock reservation expired");
  assert.equal(await stockOf(catalog, productId), 5, "the units are back");
  const event = await waitUntil(async () =>
    (await ordersEvents(mesh, OrderCancelledSchema)).find((e) => e.order?.id === orderId),
  );
  assert.deepEqual([event.cancelledBy, event.previousStatus], ["system", OrderStatus.PENDING]);
});

test("a cancellation while catalog is down commits at once; the stock goes back once catalog returns", async () => {
  const productId = await newProduct(catalog, 5);
  const { order } = await buyer.orders.buyNow({ productId, quantity: 2, idempotencyKey: newKey() });
  assert.ok(order);
  await mesh.services.catalog?.kill();
  try {
    const { order: cancelled } = await buyer.orders.cancelOrder({ orderId: order.id });
    assert.equal(cancelled?.status, OrderStatus.CANCELLED);
    const [row] = await ordersDb<{ stock: string }>(mesh, "SELECT stock FROM orders WHERE id = $1", [
      order.id,
    ]);
    assert.equal(row?.stock, "committed", "not released yet");
  } finally {
    await mesh.start("catalog");
  }
  await waitUntil(
    async () => (await stockOf(catalog, productId)) === 5,
    15_000,
    "the stock back by the sweeper",
  );
  await waitUntil(async () => {
    const [row] = await ordersDb<{ stock: string }>(mesh, "SELECT stock FROM orders WHERE id = $1", [
      order.id,
    ]);
    return row?.stock === "released";
  });
});

test("NATS down while orders are placed: every OrderPlaced reaches JetStream exactly once after NATS returns", async (t) => {
  const productId = await newProduct(catalog, 10);
  await mesh.nats.stop();
  let natsDown = true;
  t.after(async () => {
    if (natsDown) await mesh.nats.restart();
  });
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    const { order } = await buyer.orders.buyNow({ productId, quantity: 1, idempotencyKey: newKey() });
    ids.push(order?.id ?? "");
  }
  const waiting = await ordersDb(mesh, "SELECT 1 FROM outbox WHERE subject = 'orders.order.placed'");
  assert.equal(waiting.length, 5, "held in the outbox");

  await mesh.nats.restart();
  natsDown = false;
  await waitUntil(
    async () => (await ordersDb(mesh, "SELECT 1 FROM outbox")).length === 0,
    15_000,
    "outbox empty",
  );
  const placed = (await ordersEvents(mesh, OrderPlacedSchema)).filter((e) => ids.includes(e.order?.id ?? ""));
  assert.deepEqual(placed.map((e) => e.order?.id).sort(), [...ids].sort(), "each exactly once");
  assert.ok(placed.every((e) => e.email === buyer.email));
});
