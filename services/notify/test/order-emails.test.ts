// notify's order emails: OrderPlaced, OrderStatusChanged and OrderCancelled reach the buyer once,
// with lines and totals formatted from integer minor units, every event value escaped, an inbox
// row each, and nothing for an order anonymised after its buyer deleted the account.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import {
  OrderCancelledSchema,
  OrderPlacedSchema,
  OrderStatusChangedSchema,
} from "@protomesh/contracts/orders/v1/events_pb";
import { type OrderSchema, OrderStatus } from "@protomesh/contracts/orders/v1/orders_pb";
import type { ReceivedMail } from "@protomesh/devkit";
import { subjectOf } from "@protomesh/platform";
import {
  type Mesh,
  mailsTo,
  publishEvent,
  query,
  startMesh,
  uniqueEmail,
  waitUntil,
} from "@protomesh/testkit";
import { connect } from "nats";
import PostalMime from "postal-mime";

const DURABLES = [
  "notify-order-placed-emails",
  "notify-order-status-emails",
  "notify-order-cancelled-emails",
];

let mesh: Mesh;
before(async () => {
  mesh = await startMesh({
    services: ["notify"],
    gateway: false,
    env: { notify: { RETRY_BACKOFF_MS: "100" } },
  });
  // ORDERS is the orders service's stream; this mesh runs notify alone, so the test declares it
  // the way orders would, unless something already did.
  const nc = await connect({ servers: mesh.nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    const existing = await jsm.streams.find(subjectOf(OrderPlacedSchema)).catch(() => undefined);
    if (!existing) await jsm.streams.add({ name: "ORDERS", subjects: ["orders.>"], duplicate_window: 120e9 });
  } finally {
    await nc.close();
  }
});
after(() => mesh?.stop());

/** Waits until notify's order consumers have nothing left to deliver or settle. */
async function settled() {
  const nc = await connect({ servers: mesh.nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    await waitUntil(
      async () => {
        for (const durable of DURABLES) {
          const ci = await jsm.consumers.info("ORDERS", durable).catch(() => undefined);
          if (!ci || ci.num_pending > 0 || ci.num_ack_pending > 0) return false;
        }
        return true;
      },
      15_000,
      "order consumers settled",
    );
  } finally {
    await nc.close();
  }
}

const eur = (amountMinor: bigint) => ({ currency: "EUR", amountMinor });

/** A buyer and an order of two lines: 2 × 19.99 and 1 × 5.00 EUR, 44.98 in all. */
function anOrder(name = "Blue mug") {
  const buyer = { userId: randomUUID(), email: uniqueEmail("order") };
  const order: MessageInitShape<typeof OrderSchema> & { id: string } = {
    id: randomUUID(),
    userId: buyer.userId,
    status: OrderStatus.PENDING,
    lines: [
      { productId: randomUUID(), name, quantity: 2, unitPrice: eur(1999n), lineTotal: eur(3998n) },
      { productId: randomUUID(), name: "Green tea", quantity: 1, unitPrice: eur(500n), lineTotal: eur(500n) },
    ],
    total: eur(4498n),
    createTime: timestampNow(),
  };
  return { buyer, order };
}

const mailTo = (to: string, subject: string) =>
  mesh.smtp.waitFor((m) => m.to.includes(to) && m.subject === subject, 15_000);

const htmlOf = async (mail: ReceivedMail) => (await PostalMime.parse(mail.raw)).html ?? "";

const inboxKinds = async (userId: string) =>
  (
    await query<{ kind: string }>(
      mesh.env.notify.DATABASE_URL as string,
      "SELECT kind FROM notifications WHERE user_id = $1 ORDER BY created_at, kind",
      [userId],
    )
  ).map((r) => r.kind);

describe("order emails", () => {
  test("a placed order emails its lines and total once, in money formatted from minor units, and enters the inbox", async () => {
    const { buyer, order } = anOrder();
    await publishEvent(mesh.nats.url, OrderPlacedSchema, {
      order,
      email: buyer.email,
      occurTime: timestampNow(),
    });
    const mail = await mailTo(buyer.email, "Your order is placed");
    assert.ok(mail.text.includes(order.id), "names the order");
    assert.match(mail.text, /^2 × Blue mug at €19\.99 = €39\.98$/m);
    assert.match(mail.text, /^1 × Green tea at €5\.00 = €5\.00$/m);
    assert.match(mail.text, /^Total: €44\.98$/m);
    assert.match(await htmlOf(mail), /2 × Blue mug at €19\.99 = €39\.98<br>/);
    await settled();
    assert.equal(mailsTo(mesh, buyer.email, "Your order is placed").length, 1, "sent once");
    assert.deepEqual(await inboxKinds(buyer.userId), ["order_placed"]);
  });

  test("a product name with markup and invisible characters is escaped in HTML and kept to one line", async () => {
    const { buyer, order } = anOrder(`<img src=x onerror=alert(1)>Mug & "Co"\r\nTotal: €0.01\u202E`);
    await publishEvent(mesh.nats.url, OrderPlacedSchema, { order, email: buyer.email });
    const mail = await mailTo(buyer.email, "Your order is placed");
    const html = await htmlOf(mail);
    assert.ok(!html.includes("<img"), html);
    assert.ok(
      html.includes("&lt;img src=x onerror=alert(1)&gt;Mug &amp; &quot;Co&quot; Total: €0.01 at"),
      html,
    );
    assert.match(
      mail.text,
      /^2 × <img src=x onerror=alert\(1\)>Mug & "Co" Total: €0\.01 at €19\.99 = €39\.98$/m,
    );
    assert.ok(!mail.text.includes("\u202E"), "no bidi override");
    assert.doesNotMatch(mail.text, /^Total: €0\.01/m, "the name cannot add a line of its own");
  });

  test("confirmed, shipped and delivered each email the buyer in order; a cancelled status leaves it to OrderCancelled", async () => {
    const { buyer, order } = anOrder();
    const moves: Array<[OrderStatus, OrderStatus]> = [
      [OrderStatus.PENDING, OrderStatus.CONFIRMED],
      [OrderStatus.CONFIRMED, OrderStatus.SHIPPED],
      [OrderStatus.SHIPPED, OrderStatus.DELIVERED],
      [OrderStatus.CONFIRMED, OrderStatus.CANCELLED],
    ];
    for (const [previousStatus, status] of moves) {
      await publishEvent(mesh.nats.url, OrderStatusChangedSchema, {
        order: { ...order, status },
        previousStatus,
        email: buyer.email,
      });
    }
    const subjects = ["Your order is confirmed", "Your order has shipped", "Your order was delivered"];
    const mails = await Promise.all(subjects.map((s) => mailTo(buyer.email, s)));
    assert.match(mails[1]?.text ?? "", /is on its way/);
    assert.match(mails[2]?.text ?? "", /^Total: €44\.98$/m);
    const arrival = mails.map((m) => mesh.smtp.messages.indexOf(m));
    assert.deepEqual(
      arrival,
      [...arrival].sort((a, b) => a - b),
      "in the order they happened",
    );
    await settled();
    const all = mesh.smtp.messages.filter((m) => m.to.includes(buyer.email));
    assert.deepEqual(
      all.map((m) => m.subject),
      subjects,
      "one each, and none for the status CANCELLED",
    );
    assert.deepEqual(await inboxKinds(buyer.userId), ["order_confirmed", "order_shipped", "order_delivered"]);
  });

  test("a cancellation says who cancelled and why, with the reason escaped; without a reason it says none", async () => {
    const byBuyer = anOrder();
    const cancelled = (o: ReturnType<typeof anOrder>, by: string, cancelReason: string) =>
      publishEvent(mesh.nats.url, OrderCancelledSchema, {
        order: { ...o.order, status: OrderStatus.CANCELLED, cancelReason },
        previousStatus: OrderStatus.PENDING,
        email: o.buyer.email,
        cancelledBy: by,
      });
    await cancelled(byBuyer, "buyer", "<b>found it cheaper</b>\nelsewhere");
    const mine = await mailTo(byBuyer.buyer.email, "Your order was cancelled");
    assert.match(mine.text, /^You cancelled your order /m);
    assert.match(mine.text, /^Reason: <b>found it cheaper<\/b> elsewhere$/m);
    assert.ok((await htmlOf(mine)).includes("Reason: &lt;b&gt;found it cheaper&lt;/b&gt; elsewhere"));
    assert.match(mine.text, /^2 × Blue mug at €19\.99 = €39\.98$/m);

    const byShop = anOrder();
    await cancelled(byShop, "admin", "");
    const theirs = await mailTo(byShop.buyer.email, "Your order was cancelled");
    assert.match(theirs.text, /^The shop cancelled your order /m);
    assert.doesNotMatch(theirs.text, /Reason:/);
    await settled();
    assert.deepEqual(await inboxKinds(byBuyer.buyer.userId), ["order_cancelled"]);
    assert.deepEqual(await inboxKinds(byShop.buyer.userId), ["order_cancelled"]);
  });

  test("an order anonymised after its buyer deleted the account sends nothing and records nothing", async () => {
    const { buyer, order } = anOrder();
    const anonymous = { ...order, userId: "" };
    const rows = async () =>
      (
        await query<{ n: string }>(
          mesh.env.notify.DATABASE_URL as string,
          "SELECT count(*) AS n FROM notifications",
        )
      )[0]?.n;
    const mailsBefore = mesh.smtp.messages.length;
    const rowsBefore = await rows();
    // Anonymised as orders does it (no user, no address), and an address left without its user.
    for (const email of ["", buyer.email]) {
      await publishEvent(mesh.nats.url, OrderPlacedSchema, { order: anonymous, email });
      await publishEvent(mesh.nats.url, OrderStatusChangedSchema, {
        order: { ...anonymous, status: OrderStatus.SHIPPED },
        email,
      });
      await publishEvent(mesh.nats.url, OrderCancelledSchema, {
        order: { ...anonymous, status: OrderStatus.CANCELLED },
        email,
        cancelledBy: "admin",
      });
    }
    await settled();
    assert.equal(mesh.smtp.messages.length, mailsBefore, "no mail");
    assert.equal(await rows(), rowsBefore, "no inbox row");
  });
});
