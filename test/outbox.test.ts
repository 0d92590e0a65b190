// The transactional outbox end to end: an event written while NATS is down is published once
// NATS is back, and every event carries its id (Nats-Msg-Id, for JetStream's dedupe) and type.
// (How notify deduplicates by that id is notify's own test.)
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserSignedUpSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { gatewayClient, type Mesh, query, startMesh, uniqueEmail, waitUntil } from "@protomesh/testkit";
import { connect } from "nats";

/** The UserSignedUp events for this email on the AUTH stream. */
async function signedUp(email: string) {
  const nc = await connect({ servers: mesh.nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    const { state } = await jsm.streams.info("AUTH");
    const found = [];
    for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage("AUTH", { seq }).catch(() => undefined);
      if (m?.subject !== "auth.user.signed_up") continue;
      const event = fromBinary(UserSignedUpSchema, m.data);
      if (event.email === email) found.push({ event, header: m.header });
    }
    return found;
  } finally {
    await nc.close();
  }
}

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

test("an event written while NATS is down is published once NATS is back, exactly once", async (t) => {
  const email = uniqueEmail("outage");
  await mesh.nats.stop();
  let natsDown = true;
  t.after(async () => {
    if (natsDown) await mesh.nats.restart();
  });

  await signUp(email);
  const waiting = await query<{ subject: string; type: string }>(
    mesh.env.auth.DATABASE_URL as string,
    "SELECT subject, type FROM outbox",
  );
  assert.deepEqual(waiting, [{ subject: "auth.user.signed_up", type: "protomesh.auth.v1.UserSignedUp" }]);

  await mesh.nats.restart();
  natsDown = false;
  await waitUntil(
    async () => (await query(mesh.env.auth.DATABASE_URL as string, "SELECT id FROM outbox")).length === 0,
    10_000,
    "auth's outbox empty",
  );
  assert.equal((await signedUp(email)).length, 1, "published exactly once");
});

test("an event is published with its id as Nats-Msg-Id and its type in a header", async () => {
  const email = uniqueEmail("header");
  await signUp(email, "Bea");
  const [stored] = await waitUntil(async () => {
    const found = await signedUp(email);
    return found.length > 0 ? found : undefined;
  });
  assert.ok(stored);
  const eventId = stored.header.get("Nats-Msg-Id");
  assert.match(eventId, UUID);
  assert.equal(stored.header.get("Protomesh-Event-Id"), eventId);
  assert.equal(stored.header.get("Protomesh-Event-Type"), "protomesh.auth.v1.UserSignedUp");
  assert.equal(stored.event.email, email);
  assert.match(stored.event.userId, UUID);
  assert.equal(stored.event.displayName, "Bea");
});
