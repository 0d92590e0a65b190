// The transactional outbox end to end: an event written while NATS is down is published once
// NATS is back, and every event carries its id (Nats-Msg-Id, for JetStream's dedupe) and type.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserSignedUpSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { gatewayClient, type Mesh, query, startMesh, uniqueEmail, waitUntil } from "@protomesh/testkit";
import { connect } from "nats";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const signUp = (email: string, displayName = "Ada") =>
  gatewayClient(AuthService, mesh.url, "connect-json").signUp({
    email,
    password: "correct horse battery",
    displayName,
  });

let mesh: Mesh;
before(async () => {
  mesh = await startMesh();
});
after(() => mesh?.stop());

test("an event written while NATS is down is published once NATS is back, and sent once", async (t) => {
  const email = uniqueEmail("outage");
  await mesh.nats.stop();
  let natsDown = true;
  t.after(async () => {
    if (natsDown) await mesh.nats.restart();
  });

  const { userId } = await signUp(email);
  assert.match(userId, UUID);
  const waiting = await query<{ subject: string; type: string }>(
    mesh.env.auth.DATABASE_URL as string,
    "SELECT subject, type FROM outbox",
  );
  assert.deepEqual(waiting, [{ subject: "auth.user.signed_up", type: "protomesh.auth.v1.UserSignedUp" }]);

  await mesh.nats.restart();
  natsDown = false;
  await mesh.smtp.waitFor((m) => m.to.includes(email), 30_000);
  await waitUntil(
    async () => (await query(mesh.env.auth.DATABASE_URL as string, "SELECT id FROM outbox")).length === 0,
    10_000,
    "auth's outbox empty",
  );
  assert.equal(mesh.smtp.messages.filter((m) => m.to.includes(email)).length, 1, "exactly one welcome email");
});

test("an event is published with its id as Nats-Msg-Id and its type in a header", async (t) => {
  const email = uniqueEmail("header");
  const { userId } = await signUp(email, "Bea");
  const mail = await mesh.smtp.waitFor((m) => m.to.includes(email));

  const nc = await connect({ servers: mesh.nats.url });
  t.after(() => nc.close());
  const jsm = await nc.jetstreamManager();
  const stored = await jsm.streams.getMessage("AUTH", { last_by_subj: "auth.user.signed_up" });
  const eventId = stored.header.get("Nats-Msg-Id");
  assert.match(eventId, UUID);
  assert.equal(stored.header.get("Protomesh-Event-Id"), eventId);
  assert.equal(stored.header.get("Protomesh-Event-Type"), "protomesh.auth.v1.UserSignedUp");
  const event = fromBinary(UserSignedUpSchema, stored.data);
  assert.equal(event.email, email);
  assert.equal(event.userId, userId);
  assert.equal(event.displayName, "Bea");

  // The same id is what notify deduplicates on and what the mail carries.
  const rows = await query<{ event_id: string }>(
    mesh.env.notify.DATABASE_URL as string,
    "SELECT event_id FROM notifications WHERE user_id = $1",
    [userId],
  );
  assert.deepEqual(rows, [{ event_id: eventId }]);
  assert.equal(mail.messageId, `<${eventId}@protomesh>`);
});
