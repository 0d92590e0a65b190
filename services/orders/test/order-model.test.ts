// The state machine and the line fingerprint, called directly (no infrastructure).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Code, ConnectError } from "@protomesh/platform";
import { adminMove, buyerCancel, type OrderRecord, type OrderState } from "../src/order-model.ts";
import { fingerprintOf } from "../src/placement.ts";

const STATES: OrderState[] = ["pending", "confirmed", "shipped", "delivered", "cancelled"];
const LEGAL = new Set([
  "pending>confirmed",
  "pending>cancelled",
  "confirmed>shipped",
  "confirmed>cancelled",
  "shipped>delivered",
]);

const order = (status: OrderState, stock: OrderRecord["stock"] = "committed"): OrderRecord => ({
  id: crypto.randomUUID(),
  userId: crypto.randomUUID(),
  email: "a@example.com",
  status,
  stock,
  lines: [],
  currency: "EUR",
  totalMinor: 0n,
  cancelReason: "",
  cancelledBy: "",
  createdAt: new Date(),
  updatedAt: new Date(),
});

const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConnectError);
    return err;
  }
  return assert.fail("expected a refusal");
};

test("an admin may make exactly the moves of the state machine; every other is refused naming both states", () => {
  for (const from of STATES) {
    for (const to of STATES) {
      if (from === to) {
        assert.equal(adminMove(order(from), to, ""), undefined, `${from} to itself is a no-op`);
      } else if (LEGAL.has(`${from}>${to}`)) {
        assert.equal(adminMove(order(from), to, "")?.to, to);
      } else {
        const err = refusal(() => adminMove(order(from), to, ""));
        assert.equal(err.code, Code.FailedPrecondition);
        assert.equal(
          err.rawMessage,
          `cannot move an order from ${from.toUpperCase()} to ${to.toUpperCase()}`,
        );
      }
    }
  }
});

test("an order ships only once catalog committed its stock", () => {
  const err = refusal(() => adminMove(order("confirmed", "reserved"), "shipped", ""));
  assert.equal(err.code, Code.FailedPrecondition);
  assert.match(err.rawMessage, /not committed/);
});

test("an admin's cancellation records the admin and the reason", () => {
  assert.deepEqual(adminMove(order("confirmed"), "cancelled", "fraud"), {
    to: "cancelled",
    reason: "fraud",
    by: "admin",
  });
});

test("a buyer cancels while pending or confirmed; a cancelled order stays as it is; a shipped one is refused", () => {
  assert.equal(buyerCancel(order("pending"), "")?.by, "buyer");
  assert.equal(buyerCancel(order("confirmed"), "changed my mind")?.reason, "changed my mind");
  assert.equal(buyerCancel(order("cancelled"), ""), undefined);
  for (const status of ["shipped", "delivered"] as const) {
    const err = refusal(() => buyerCancel(order(status), ""));
    assert.equal(err.code, Code.FailedPrecondition);
    assert.match(err.rawMessage, new RegExp(status.toUpperCase()));
  }
});

test("the fingerprint ignores the order of lines but not their products or quantities", () => {
  const a = crypto.randomUUID();
  const b = crypto.randomUUID();
  const print = fingerprintOf([
    { productId: a, quantity: 1 },
    { productId: b, quantity: 2 },
  ]);
  assert.equal(
    fingerprintOf([
      { productId: b, quantity: 2 },
      { productId: a.toUpperCase(), quantity: 1 },
    ]),
    print,
  );
  assert.notEqual(
    fingerprintOf([
      { productId: a, quantity: 1 },
      { productId: b, quantity: 3 },
    ]),
    print,
  );
  assert.notEqual(fingerprintOf([{ productId: a, quantity: 1 }]), print);
});
