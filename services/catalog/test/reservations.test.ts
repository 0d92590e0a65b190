// ReserveStock / ReleaseStock / CommitStock as orders calls them (mesh credentials): never an
// oversell, all or nothing, no deadlock, idempotent per order id, and expired reservations give
// their units back without anyone acting.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { CatalogService } from "@protomesh/contracts/catalog/v1/catalog_pb";
import { freePort } from "@protomesh/devkit";
import { createServiceClient } from "@protomesh/platform";
import { assertCode, type Mesh, startMesh, waitUntil } from "@protomesh/testkit";
import { catalogDb, heldUnits, type MeshCatalog, meshCatalog, newProduct, stockOf } from "./helpers.ts";

let mesh: Mesh;
let catalog: MeshCatalog;
before(async () => {
  mesh = await startMesh({
    services: ["catalog"],
    gateway: false,
    env: { catalog: { CATALOG_SEED_DEMO: "false" } },
  });
  catalog = meshCatalog(mesh);
});
after(async () => {
  catalog?.close();
  await mesh?.stop();
});

/** The status code a call ended with (OK is "ok"). */
const outcome = (call: Promise<unknown>) =>
  call.then(
    () => "ok",
    (err: unknown) => (err instanceof ConnectError ? Code[err.code] : String(err)),
  );

const tally = (outcomes: string[]) =>
  outcomes.reduce<Record<string, number>>((t, o) => {
    t[o] = (t[o] ?? 0) + 1;
    return t;
  }, {});

test("200 concurrent reservations of a product with stock 10: exactly 10 succeed, stock ends at 0", async () => {
  const product = await newProduct(catalog, 10);
  const outcomes = await Promise.all(
    Array.from({ length: 200 }, () =>
      outcome(catalog.reserveStock({ orderId: randomUUID(), lines: [{ productId: product, quantity: 1 }] })),
    ),
  );
  assert.deepEqual(tally(outcomes), { ok: 10, FailedPrecondition: 190 });
  assert.equal(await stockOf(catalog, product), 0);
  assert.equal(await heldUnits(mesh, product), 10, "stock + held units = the initial 10");
  const ledger = await catalogDb<{ kind: string; n: number }>(
    mesh,
    "SELECT kind, count(*)::int AS n FROM stock_movements WHERE product_id = $1 GROUP BY kind ORDER BY kind",
    [product],
  );
  assert.deepEqual(
    ledger.map((r) => [r.kind, r.n]),
    [
      ["initial", 1],
      ["reservation", 10],
    ],
  );
});

test("overlapping A+B and B+A reservations: no deadlock, all or nothing, stock conserved", async () => {
  const a = await newProduct(catalog, 30);
  const b = await newProduct(catalog, 60);
  const outcomes = await Promise.all(
    Array.from({ length: 120 }, (_, i) => {
      const lines =
        i % 2 === 0
          ? [
              { productId: a, quantity: 1 },
              { productId: b, quantity: 1 },
            ]
          : [
              { productId: b, quantity: 1 },
              { productId: a, quantity: 1 },
            ];
      return outcome(catalog.reserveStock({ orderId: randomUUID(), lines }));
    }),
  );
  assert.deepEqual(tally(outcomes), { ok: 30, FailedPrecondition: 90 }, "A runs out after 30 orders");
  assert.equal(await stockOf(catalog, a), 0);
  assert.equal(await stockOf(catalog, b), 30, "no B was taken by an order that could not have its A");
  assert.equal(await heldUnits(mesh, a), 30);
  assert.equal(await heldUnits(mesh, b), 30);
});

test("a short line fails the whole reservation and names the product; nothing is taken", async () => {
  const plenty = await newProduct(catalog, 100);
  const scarce = await newProduct(catalog, 2);
  const orderId = randomUUID();
  const err = await assertCode(
    catalog.reserveStock({
      orderId,
      lines: [
        { productId: plenty, quantity: 5 },
        { productId: scarce, quantity: 3 },
      ],
    }),
    Code.FailedPrecondition,
  );
  assert.match(err.rawMessage, new RegExp(scarce));
  assert.equal(await stockOf(catalog, plenty), 100);
  assert.equal(await stockOf(catalog, scarce), 2);
  assert.deepEqual(await catalogDb(mesh, "SELECT 1 FROM reservations WHERE order_id = $1", [orderId]), []);
  // The order id is not burnt: with fitting lines it reserves.
  await catalog.reserveStock({ orderId, lines: [{ productId: scarce, quantity: 2 }] });
  assert.equal(await stockOf(catalog, scarce), 0);
});

test("the same order id 5 times in parallel: one decrement, five identical answers", async () => {
  const p = await newProduct(catalog, 20, { name: "Idempotent mug", priceMinor: 1250n });
  const q = await newProduct(catalog, 20);
  const orderId = randomUUID();
  const lines = [
    { productId: p, quantity: 3 },
    { productId: q, quantity: 2 },
  ];
  const answers = await Promise.all(
    Array.from({ length: 5 }, () => catalog.reserveStock({ orderId, lines })),
  );
  for (const a of answers.slice(1)) assert.deepEqual(a, answers[0]);
  assert.equal(await stockOf(catalog, p), 17);
  assert.equal(await stockOf(catalog, q), 18);
  const first = answers[0]?.lines[0];
  assert.equal(first?.name, "Idempotent mug");
  assert.deepEqual([first?.unitPrice?.currency, first?.unitPrice?.amountMinor], ["EUR", 1250n]);

  // A retry later, lines listed the other way round, answers in its own order from the snapshot.
  const retry = await catalog.reserveStock({ orderId, lines: [...lines].reverse() });
  assert.deepEqual(
    retry.lines.map((l) => [l.productId, l.quantity]),
    [
      [q, 2],
      [p, 3],
    ],
  );
  assert.equal(await stockOf(catalog, p), 17, "still one decrement");

  const other = await assertCode(
    catalog.reserveStock({ orderId, lines: [{ productId: p, quantity: 4 }] }),
    Code.InvalidArgument,
  );
  assert.match(other.rawMessage, /^lines: /);
  assert.equal(await stockOf(catalog, p), 17);
});

test("release returns reserved or committed units once; a released order id refuses a late reservation", async () => {
  const p = await newProduct(catalog, 10);
  const reserved = randomUUID();
  await catalog.reserveStock({ orderId: reserved, lines: [{ productId: p, quantity: 4 }] });
  await Promise.all([
    catalog.releaseStock({ orderId: reserved }),
    catalog.releaseStock({ orderId: reserved }),
  ]);
  assert.equal(await stockOf(catalog, p), 10, "released once, not twice");
  await assertCode(
    catalog.commitStock({ orderId: reserved }),
    Code.FailedPrecondition,
    "commit after release",
  );
  await assertCode(
    catalog.reserveStock({ orderId: reserved, lines: [{ productId: p, quantity: 4 }] }),
    Code.FailedPrecondition,
    "reserve after release",
  );

  const committed = randomUUID();
  await catalog.reserveStock({ orderId: committed, lines: [{ productId: p, quantity: 3 }] });
  await catalog.commitStock({ orderId: committed });
  await catalog.commitStock({ orderId: committed }); // idempotent
  assert.equal(await stockOf(catalog, p), 7, "commit changes no stock");
  await catalog.releaseStock({ orderId: committed });
  assert.equal(await stockOf(catalog, p), 10, "a cancelled committed order gives its units back");

  // An order that gave up before its reservation arrived: the release comes first.
  const late = randomUUID();
  await catalog.releaseStock({ orderId: late });
  await assertCode(
    catalog.reserveStock({ orderId: late, lines: [{ productId: p, quantity: 1 }] }),
    Code.FailedPrecondition,
  );
  assert.equal(await stockOf(catalog, p), 10);
  await assertCode(catalog.commitStock({ orderId: randomUUID() }), Code.NotFound, "commit of no reservation");

  const kinds = await catalogDb<{ kind: string; delta: number }>(
    mesh,
    "SELECT kind, delta FROM stock_movements WHERE product_id = $1 ORDER BY seq",
    [p],
  );
  assert.deepEqual(
    kinds.map((k) => `${k.kind}${k.delta}`),
    ["initial10", "reservation-4", "release4", "reservation-3", "release3"],
  );
});

test("a reservation neither committed nor released expires and its units return", async () => {
  // A second replica with a one-second reservation time; both replicas run the expiry worker.
  const port = await freePort();
  await mesh.start("catalog", {
    env: { PORT: String(port), RESERVATION_TTL_S: "1", RESERVATION_EXPIRY_INTERVAL_S: "1" },
  });
  const shortLived = meshCatalog(mesh, `127.0.0.1:${port}`);
  try {
    const p = await newProduct(catalog, 5);
    const forgotten = randomUUID();
    const res = await shortLived.reserveStock({ orderId: forgotten, lines: [{ productId: p, quantity: 5 }] });
    assert.ok(res.expireTime, "the answer says when it expires");
    assert.equal(await stockOf(catalog, p), 0);
    await waitUntil(async () => (await stockOf(catalog, p)) === 5, 10_000, "the expired units back in stock");
    await assertCode(
      catalog.commitStock({ orderId: forgotten }),
      Code.FailedPrecondition,
      "commit after expiry",
    );
    await assertCode(
      catalog.reserveStock({ orderId: forgotten, lines: [{ productId: p, quantity: 5 }] }),
      Code.FailedPrecondition,
      "reserve after expiry",
    );
    await catalog.releaseStock({ orderId: forgotten });
    assert.equal(await stockOf(catalog, p), 5, "a release after expiry returns nothing twice");
    const [expiry] = await catalogDb<{ delta: number; order_id: string }>(
      mesh,
      "SELECT delta, order_id FROM stock_movements WHERE product_id = $1 AND kind = 'expiry'",
      [p],
    );
    assert.deepEqual(expiry, { delta: 5, order_id: forgotten });

    // Committed in time: it never expires.
    const kept = randomUUID();
    await shortLived.reserveStock({ orderId: kept, lines: [{ productId: p, quantity: 2 }] });
    await shortLived.commitStock({ orderId: kept });
    const due = Date.now() + 2_500;
    await waitUntil(() => Date.now() > due, 5_000, "past the expiry");
    assert.equal(await stockOf(catalog, p), 3);
  } finally {
    shortLived.close();
  }
});

test("bad lines are INVALID_ARGUMENT naming the field, an unknown product NOT_FOUND; nothing is written", async () => {
  const p = await newProduct(catalog, 10);
  const cases: Array<[string, { productId: string; quantity: number }[], RegExp]> = [
    ["zero quantity", [{ productId: p, quantity: 0 }], /^lines\[0\]\.quantity: /],
    ["negative quantity", [{ productId: p, quantity: -1 }], /^lines\[0\]\.quantity: /],
    [
      "too many lines",
      Array.from({ length: 101 }, () => ({ productId: randomUUID(), quantity: 1 })),
      /^lines: /,
    ],
    ["no lines", [], /^lines: /],
    ["not a uuid", [{ productId: "p-1", quantity: 1 }], /^lines\[0\]\.product_id: /],
    [
      "one product twice",
      [
        { productId: p, quantity: 1 },
        { productId: p.toUpperCase(), quantity: 1 },
      ],
      /^lines\[1\]\.product_id: /,
    ],
    ["NUL", [{ productId: `${p}\0`, quantity: 1 }], /^lines\[0\]\.product_id: /],
  ];
  for (const [what, lines, field] of cases) {
    const orderId = randomUUID();
    const err = await assertCode(catalog.reserveStock({ orderId, lines }), Code.InvalidArgument, what);
    assert.match(err.rawMessage, field, what);
    assert.deepEqual(
      await catalogDb(mesh, "SELECT 1 FROM reservations WHERE order_id = $1", [orderId]),
      [],
      what,
    );
  }
  await assertCode(
    catalog.reserveStock({ orderId: "order-1", lines: [{ productId: p, quantity: 1 }] }),
    Code.InvalidArgument,
  );

  const unknown = randomUUID();
  const orderId = randomUUID();
  const err = await assertCode(
    catalog.reserveStock({
      orderId,
      lines: [
        { productId: p, quantity: 1 },
        { productId: unknown, quantity: 1 },
      ],
    }),
    Code.NotFound,
  );
  assert.match(err.rawMessage, new RegExp(unknown));
  assert.equal(await stockOf(catalog, p), 10);
  assert.deepEqual(await catalogDb(mesh, "SELECT 1 FROM reservations WHERE order_id = $1", [orderId]), []);
});

test("the stock methods are internal: refused to a caller without mesh credentials", async () => {
  const p = await newProduct(catalog, 10);
  const outsider = createServiceClient(CatalogService, mesh.addr("catalog"));
  try {
    const orderId = randomUUID();
    await assertCode(
      outsider.reserveStock({ orderId, lines: [{ productId: p, quantity: 1 }] }),
      Code.PermissionDenied,
    );
    await assertCode(outsider.releaseStock({ orderId }), Code.PermissionDenied);
    await assertCode(outsider.commitStock({ orderId }), Code.PermissionDenied);
    assert.equal(await stockOf(catalog, p), 10);
  } finally {
    outsider.close();
  }
});
