// Durable consumers handle events in parallel (up to `concurrency`), one at a time and in order
// per `orderKey`, with a failing key retried in place while the other keys go on. Real NATS
// JetStream and PostgreSQL; every wait is for the thing itself, never for time.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, beforeEach, test } from "node:test";
import { UserSignedUpSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { type Nats, startNats } from "@protomesh/devkit";
import {
  type ConsumerSpec,
  consumer,
  createLogger,
  createPool,
  defineStream,
  type Pool,
} from "@protomesh/platform";
import { publishEvent, testDatabases, waitUntil, within } from "@protomesh/testkit";
import { connect, type JetStreamManager, type NatsConnection } from "nats";
import { migrate, platformMigrations } from "../src/db.ts";
import { startConsumer } from "../src/events.ts";
import { ensureStreams } from "../src/nats.ts";

const log = createLogger("test", "silent");
let nats: Nats;
let nc: NatsConnection;
let jsm: JetStreamManager;
let dbs: Awaited<ReturnType<typeof testDatabases>>;
let pool: Pool;

before(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url });
  jsm = await nc.jetstreamManager();
  await ensureStreams(jsm, [defineStream({ name: "AUTH", subjects: ["auth.>"], maxAgeMs: 3_600_000 })], log);
  dbs = await testDatabases();
  pool = createPool(await dbs.create("consumers"), log, 30);
  await migrate(pool, [platformMigrations], log);
});
after(async () => {
  await pool?.end();
  await dbs?.release();
  await nc?.close();
  await nats?.stop();
});
// Each test's durable starts from the beginning of the stream: it sees only its own events.
beforeEach(() => jsm.streams.purge("AUTH"));

/** An event whose user id is its order key and whose display name says which one it is. */
const publish = (key: string, name: string) =>
  publishEvent(nats.url, UserSignedUpSchema, { userId: key, displayName: name });

type Spec = ConsumerSpec<typeof UserSignedUpSchema>;

/** Starts a consumer of its own durable on the test's stream and database. */
function run(spec: Partial<Spec> & Pick<Spec, "handle">) {
  const durable = spec.durable ?? `test-${randomUUID().slice(0, 8)}`;
  const listener = startConsumer(consumer({ event: UserSignedUpSchema, ...spec, durable }), {
    js: nc.jetstream(),
    jsm,
    log,
    pool,
  });
  return Object.assign(listener, { durable });
}

/** A gate a handler waits at until the test opens it. */
function gate() {
  let open: () => void = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

test("events of different keys run in parallel, up to the consumer's concurrency (default 8)", async (t) => {
  let inFlight = 0;
  let most = 0;
  const done: string[] = [];
  const release = gate();
  const c = run({
    orderKey: (e) => e.userId,
    async handle(e) {
      most = Math.max(most, ++inFlight);
      await release.opened;
      inFlight--;
      done.push(e.displayName);
    },
  });
  t.after(() => {
    release.open();
    return c.stop();
  });
  for (let i = 0; i < 20; i++) await publish(`user-${i}`, `e${i}`);
  await waitUntil(() => inFlight === 8, 15_000, "8 handlers in flight at once");
  release.open();
  await waitUntil(() => done.length === 20, 15_000, "all 20 handled");
  assert.equal(most, 8, "never more than the concurrency");
});

test("events of one key run one at a time in publish order, even when an earlier one is slower; other keys pass it", async (t) => {
  const started: string[] = [];
  const done: string[] = [];
  const slow = gate();
  let alongside = 0;
  let inKeyA = 0;
  const c = run({
    concurrency: 4,
    orderKey: (e) => e.userId,
    async handle(e) {
      started.push(e.displayName);
      if (e.userId === "a") {
        alongside = Math.max(alongside, ++inKeyA);
        if (e.displayName === "a1") await slow.opened;
        inKeyA--;
      }
      done.push(e.displayName);
    },
  });
  t.after(() => {
    slow.open();
    return c.stop();
  });
  for (const n of ["a1", "a2", "a3", "a4", "a5"]) await publish("a", n);
  await publish("b", "b1");
  await waitUntil(() => done.includes("b1"), 15_000, "key b handled while a1 is slow");
  assert.deepEqual(
    started.filter((n) => n.startsWith("a")),
    ["a1"],
    "nothing of key a starts while a1 runs",
  );
  slow.open();
  await waitUntil(() => done.filter((n) => n.startsWith("a")).length === 5, 15_000, "key a handled");
  assert.deepEqual(
    done.filter((n) => n.startsWith("a")),
    ["a1", "a2", "a3", "a4", "a5"],
  );
  assert.equal(alongside, 1, "never two events of one key at once");
});

test("a failing event is retried in its place without holding up other keys; the next of its key waits for it", async (t) => {
  const done: string[] = [];
  const attempts: number[] = [];
  let bDone = false;
  const c = run({
    orderKey: (e) => e.userId,
    backoffMs: [20],
    maxDeliver: 1_000,
    async handle(e, meta) {
      if (e.displayName === "a1") {
        attempts.push(meta.deliveryCount);
        // Fails until key b has been handled: b must not wait for a1's retries.
        if (!bDone) throw new Error("not yet");
      }
      if (e.userId === "b") bDone = true;
      done.push(e.displayName);
    },
  });
  t.after(() => c.stop());
  await publish("a", "a1");
  await publish("a", "a2");
  await publish("b", "b1");
  await waitUntil(() => done.length === 3, 15_000, "all handled");
  assert.deepEqual(done, ["b1", "a1", "a2"], "b first; a2 only after a1 succeeded");
  assert.ok(attempts.length >= 2, "a1 failed at least once");
  assert.deepEqual(
    attempts,
    attempts.map((_, i) => i + 1),
    "each retry counts as a delivery",
  );
});

test("a keyed event that keeps failing is dead-lettered after maxDeliver, and its key goes on", async (t) => {
  const done: string[] = [];
  let tries = 0;
  const c = run({
    orderKey: (e) => e.userId,
    backoffMs: [10],
    maxDeliver: 3,
    async handle(e) {
      if (e.displayName === "bad") {
        tries++;
        throw new Error("always fails");
      }
      done.push(e.displayName);
    },
  });
  t.after(() => c.stop());
  await publish("a", "bad");
  await publish("a", "next");
  await waitUntil(() => done.includes("next"), 15_000, "the next event of the key");
  assert.equal(tries, 3);
  const dlq = await jsm.streams.info("AUTH_DLQ");
  assert.ok(dlq.state.messages >= 1, "a dead letter was written");
});

test("stop waits for the handlers in flight, which commit and ack; what had not started goes back", async (t) => {
  const done: string[] = [];
  const release = gate();
  let entered = 0;
  const c = run({
    concurrency: 1,
    async handle(e) {
      entered++;
      await release.opened;
      done.push(e.displayName);
    },
  });
  t.after(() => {
    release.open();
    return c.stop();
  });
  await publish("a", "first");
  await publish("b", "second");
  await waitUntil(() => entered === 1, 15_000, "the first handler running");
  // Both delivered to this replica (the second waits for the one slot), so the second is one
  // that had not started, not one still on its way from the server.
  await waitUntil(
    async () => (await jsm.consumers.info("AUTH", c.durable)).num_ack_pending === 2,
    15_000,
    "the second delivered",
  );
  let stopped = false;
  const stopping = c.stop().then(() => {
    stopped = true;
  });
  await waitUntil(() => nc.flush().then(() => true), 5_000, "a round trip");
  assert.equal(stopped, false, "stop waits for the handler in flight");
  release.open();
  await within(stopping, 10_000, "stop");
  assert.deepEqual(done, ["first"], "nothing new starts once stopping");
  // The server applies an ack on its own time, after it answered stop's last round trip.
  await waitUntil(
    async () => (await jsm.consumers.info("AUTH", c.durable)).ack_floor.consumer_seq === 1,
    5_000,
    "the first acked",
  );
  const { rows } = await pool.query("SELECT count(*)::int AS n FROM processed_events WHERE consumer = $1", [
    c.durable,
  ]);
  assert.equal(rows[0].n, 1, "and recorded as processed");

  // Handed back rather than left to ack_wait (30 s, beyond this wait): the next start gets it.
  const again = run({
    durable: c.durable,
    async handle(e) {
      done.push(e.displayName);
    },
  });
  t.after(() => again.stop());
  await waitUntil(() => done.includes("second"), 10_000, "the unstarted event redelivered at once");
  assert.deepEqual(done, ["first", "second"]);
});

test("a delayed consumer holds every event that arrives within its delay, not a few dozen", async (t) => {
  const c = run({ delayMs: 10 * 60_000, handle: async () => assert.fail("handled before its delay") });
  t.after(() => c.stop());
  const COUNT = 100;
  await Promise.all(Array.from({ length: COUNT }, (_, i) => publish(`delayed-${i}`, `d${i}`)));
  // Delivered and held (kept from redelivery), none handled: all of them, not the hold limit.
  await waitUntil(
    async () => (await jsm.consumers.info("AUTH", c.durable)).num_ack_pending === COUNT,
    10_000,
    `all ${COUNT} delayed events held`,
  );
});
