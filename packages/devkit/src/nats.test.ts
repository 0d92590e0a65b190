import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { connect, StringCodec } from "nats";
import { startNats } from "./nats.ts";

const codec = StringCodec();

async function connectOnce(url: string) {
  return connect({ servers: url, reconnect: false, maxReconnectAttempts: 0 });
}

test("JetStream streams and messages survive a stop and a restart on the same port", async (t) => {
  const nats = await startNats();
  t.after(() => nats.stop());
  assert.equal(nats.url, `nats://127.0.0.1:${nats.port}`);

  const before = await connectOnce(nats.url);
  const jsm = await before.jetstreamManager();
  await jsm.streams.add({ name: "DEVKIT_ORDERS", subjects: ["devkit.orders.>"] });
  await before.jetstream().publish("devkit.orders.placed", codec.encode("order-1"), { msgID: "evt-1" });
  await before.close();

  await nats.stop();
  await assert.rejects(connectOnce(nats.url));
  await nats.restart();

  const after = await connectOnce(nats.url);
  t.after(() => after.close());
  const afterJsm = await after.jetstreamManager();
  const info = await afterJsm.streams.info("DEVKIT_ORDERS");
  assert.equal(info.state.messages, 1);
  const stored = await afterJsm.streams.getMessage("DEVKIT_ORDERS", { seq: 1 });
  assert.equal(stored.subject, "devkit.orders.placed");
  assert.equal(codec.decode(stored.data), "order-1");
});

test("restart() on a running server brings it back on the same port", async (t) => {
  const nats = await startNats();
  t.after(() => nats.stop());
  await nats.restart();
  const client = await connectOnce(nats.url);
  await client.close();
});

test("stop() during a restart still leaves no server behind", async () => {
  const nats = await startNats();
  const restarting = nats.restart();
  const stopping = nats.stop();
  await Promise.allSettled([restarting]);
  await stopping;
  await assert.rejects(connectOnce(nats.url));
  assert.ok(existsSync(nats.storeDir), "a temp store lives until the process exits");
});
