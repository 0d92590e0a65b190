// The transactional outbox end to end: an event written while NATS is down is published once
// NATS is back, and every event carries its id (Nats-Msg-Id, for JetStream's dedupe) and type.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserSignedUpSchema } from "@protomesh/contracts/auth/v1/events_pb";
import {
  gatewayClient,
  type Mesh,
  query,
  startMesh,
  TEST_PASSWORD,
  uniqueEmail,
  waitUntil,
} from "@protomesh/testkit";
import { connect } from "nats";
import { MAIL } from "../services/auth/test/account-helpers.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const signUp = (email: string, displayName = "Ada") =>
  gatewayClient(AuthService, mesh.url, "connect-json").signUp({
    email,
    password: TEST_PASSWORD,
    displayName,
  });

/** The id of the account an email belongs to, from auth's own table. */
const userIdOf = async (email: string) =>
  (
    await query<{ user_id: string }>(
      mesh.env.auth.DATABASE_URL as string,
      "SELECT user_id FROM credentials WHERE email = $1",
      [email],
    )
  )[0]?.user_id;

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

  await signUp(email);
  assert.match((await userIdOf(email)) ?? "", UUID);
  const waiting = await query<{ subject: string; type: string }>(
    mesh.env.auth.DATABASE_URL as string,
    "SELECT subject, type FROM outbox",
  );
  assert.deepEqual(waiting, [{ subject: "auth.user.signed_up", type: "protomesh.auth.v1.UserSignedUp" }]);
  const codes = await query(mesh.env.otp.DATABASE_URL as string, "SELECT subject FROM outbox");
  assert.equal(codes.length, 1, "the verification code waits in otp's outbox");

  await mesh.nats.restart();
  natsDown = false;
  await mesh.smtp.waitFor((m) => m.to.includes(email), 30_000);
  await waitUntil(
    async () => (await query(mesh.env.auth.DATABASE_URL as string, "SELECT id FROM outbox")).length === 0,
    10_000,
    "auth's outbox empty",
  );
  assert.equal(
    mesh.smtp.messages.filter((m) => m.to.includes(email) && m.subject === MAIL.verify).length,
    1,
    "exactly one verification email",
  );
});

test("an event is published with its id as Nats-Msg-Id and its type in a header", async (t) => {
  const email = uniqueEmail("header");
  await signUp(email, "Bea");
  const userId = await userIdOf(email);
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

  // The code's event id (otp's) is what notify deduplicates on and what the mail carries.
  const code = await jsm.streams.getMessage("OTP", { last_by_subj: "otp.code.issued" });
  const codeEventId = code.header.get("Nats-Msg-Id");
  const rows = await query<{ event_id: string }>(
    mesh.env.notify.DATABASE_URL as string,
    "SELECT event_id FROM notifications WHERE user_id = $1",
    [userId],
  );
  assert.deepEqual(rows, [{ event_id: codeEventId }]);
  assert.equal(mail.messageId, `<${codeEventId}@protomesh>`);
});
