// Events end to end: the transactional outbox survives a NATS outage, a consumer that crashes
// before its ack does not send twice, the event id travels as Nats-Msg-Id, and a message that
// keeps failing ends up in the dead-letter stream.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserSignedUpSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { notifyService, readNotifyConfig } from "@protomesh/notify";
import { type RunningService, startService } from "@protomesh/platform";
import { type ConsumerInfo, connect, type JetStreamManager, type NatsConnection } from "nats";
import pg from "pg";
import { gatewayClient, uniqueEmail } from "./support/clients.ts";
import { type Mesh, startMesh } from "./support/mesh.ts";

const DURABLE = "notify-welcome-emails";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Polls fn every 50 ms until it returns a truthy value; fails after timeoutMs. */
async function waitUntil<T>(
  fn: () => Promise<T> | T,
  timeoutMs = 15_000,
  what = "condition",
): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) {
      throw new Error(`waitUntil: ${what} not reached within ${timeoutMs} ms${last ? `: ${last}` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Resolves as promise does, or fails after timeoutMs. */
async function within<T>(
  promise: Promise<T> | undefined,
  timeoutMs: number,
  what: string,
): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A NATS connection of the test's own, closed after the test. */
async function natsManager(mesh: Mesh, t: { after(fn: () => Promise<void>): void }) {
  const nc: NatsConnection = await connect({ servers: mesh.nats.url, maxReconnectAttempts: -1 });
  t.after(() => nc.close());
  return { nc, jsm: await nc.jetstreamManager() };
}

/** One query against a service's database on a short-lived connection. */
async function query<R extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

/** Waits until the welcome-email consumer has nothing left to deliver or settle. */
function settled(jsm: JetStreamManager, extra: (ci: ConsumerInfo) => boolean = () => true) {
  return waitUntil(
    async () => {
      const ci = await jsm.consumers.info("AUTH", DURABLE);
      return ci.num_pending === 0 && ci.num_ack_pending === 0 && extra(ci) ? ci : undefined;
    },
    20_000,
    `consumer ${DURABLE} settled`,
  );
}

const mailsTo = (mesh: Mesh, email: string) => mesh.smtp.messages.filter((m) => m.to.includes(email));

const signUp = (mesh: Mesh, email: string, displayName = "Ada") =>
  gatewayClient(AuthService, mesh.gateway.url, "connect-json").signUp({
    email,
    password: "correct horse battery",
    displayName,
  });

let mesh: Mesh;
before(async () => {
  mesh = await startMesh();
});
after(() => mesh?.stop());

test("an event written while NATS is down is published once NATS is back", async (t) => {
  const email = uniqueEmail("outage");
  await mesh.nats.stop();
  let natsDown = true;
  t.after(async () => {
    if (natsDown) await mesh.nats.restart();
  });

  const { userId } = await signUp(mesh, email);
  assert.match(userId, UUID);
  const waiting = await query<{ subject: string; type: string }>(
    mesh.env.auth.DATABASE_URL as string,
    "SELECT subject, type FROM outbox",
  );
  assert.deepEqual(waiting, [{ subject: "auth.user.signed_up", type: "protomesh.auth.v1.UserSignedUp" }]);

  await mesh.nats.restart();
  natsDown = false;
  await mesh.smtp.waitFor((m) => m.to.includes(email), 30_000);
  const { jsm } = await natsManager(mesh, t);
  await settled(jsm);
  assert.equal(mailsTo(mesh, email).length, 1, "exactly one welcome email");
  await waitUntil(
    async () => (await query(mesh.env.auth.DATABASE_URL as string, "SELECT id FROM outbox")).length === 0,
    10_000,
    "auth's outbox empty",
  );
});

test("an event is published with its id as Nats-Msg-Id and its type in a header", async (t) => {
  const email = uniqueEmail("header");
  const { userId } = await signUp(mesh, email, "Bea");
  const mail = await mesh.smtp.waitFor((m) => m.to.includes(email));

  const { jsm } = await natsManager(mesh, t);
  const stored = await jsm.streams.getMessage("AUTH", { last_by_subj: "auth.user.signed_up" });
  const eventId = stored.header.get("Nats-Msg-Id");
  assert.match(eventId, UUID);
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

test("the welcome email is sent once when notify crashes before its ack", async (t) => {
  let crashed: string | undefined;
  const m: Mesh = await startMesh({
    notifyAckWaitMs: 1_000,
    // Runs inside notify after its transaction committed: crash there, so it never acks.
    notifyBeforeAck: async (eventId) => {
      if (crashed) return;
      crashed = eventId;
      // Not awaited: kill() closes NATS before the pool, and see the test on kill() below.
      void m.notify.kill();
      throw new Error("notify crashed before its ack");
    },
  });
  t.after(() => m.stop());
  const email = uniqueEmail("crash");

  const { userId } = await signUp(m, email);
  await m.smtp.waitFor((mail) => mail.to.includes(email));
  await waitUntil(() => crashed !== undefined, 10_000, "notify crashed after sending, before its ack");

  const fresh = await m.startNotify({ notifyAckWaitMs: 1_000 });
  t.after(() => fresh.stop());
  const { jsm } = await natsManager(m, t);
  const ci = await settled(jsm, (c) => c.delivered.consumer_seq >= 2);
  assert.ok(ci.delivered.consumer_seq >= 2, "JetStream redelivered the unacked event");

  assert.equal(mailsTo(m, email).length, 1, "exactly one welcome email");
  const rows = await query<{ event_id: string }>(
    m.env.notify.DATABASE_URL as string,
    "SELECT event_id FROM notifications WHERE user_id = $1",
    [userId],
  );
  assert.deepEqual(rows, [{ event_id: crashed }]);
});

test("kill() of a running service settles, as a crash would", async () => {
  const doomed = await mesh.startNotify();
  await within(doomed.kill(), 10_000, "kill() of a running notify");
});

test("an event that keeps failing goes to the dead-letter stream after maxDeliver attempts", async (t) => {
  const m = await startMesh();
  t.after(() => m.stop());
  // The production backoff (1 s, 5 s, 30 s, 60 s) is too slow for a test and notify has no
  // setting for it: replace notify with the same definition and a short backoff.
  await m.notify.stop();
  const def = notifyService(readNotifyConfig({ ...m.env.notify, AUTH_ADDR: m.addr("auth") }));
  const fast: RunningService = await startService({
    ...def,
    async build(deps) {
      const parts = await def.build(deps);
      return { ...parts, consumers: (parts.consumers ?? []).map((c) => ({ ...c, backoffMs: [50] })) };
    },
  });
  t.after(() => fast.stop());

  await m.smtp.stop();
  const email = uniqueEmail("poison");
  const { userId } = await signUp(m, email);

  const { jsm } = await natsManager(m, t);
  const dead = await waitUntil(
    () => jsm.streams.getMessage("DLQ", { last_by_subj: `dlq.${DURABLE}` }),
    20_000,
    "a message in the DLQ stream",
  );
  assert.equal(dead.header.get("Protomesh-Original-Subject"), "auth.user.signed_up");
  assert.equal(dead.header.get("Protomesh-Event-Type"), "protomesh.auth.v1.UserSignedUp");
  assert.ok(dead.header.get("Protomesh-Error"), "the last error is recorded");
  const event = fromBinary(UserSignedUpSchema, dead.data);
  assert.equal(event.userId, userId);
  assert.equal(event.email, email);

  const ci = await settled(jsm);
  assert.equal(ci.delivered.consumer_seq, 5, "delivered exactly maxDeliver (5) times");
  const rows = await query(
    m.env.notify.DATABASE_URL as string,
    "SELECT 1 FROM notifications WHERE user_id = $1",
    [userId],
  );
  assert.equal(rows.length, 0, "a failed send leaves no inbox row");
});
