// The outbox relay publishes what commits while it is busy publishing, without waiting for its
// fallback poll: the NOTIFY of such a commit must not be lost.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { UserSignedUpSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { type Nats, type Postgres, startNats, startPostgres } from "@protomesh/devkit";
import {
  addEvent,
  createLogger,
  createPool,
  defineStream,
  type Pool,
  withTransaction,
} from "@protomesh/platform";
import { waitUntil } from "@protomesh/testkit";
import { connect, type NatsConnection } from "nats";
import { migrate, platformMigrations } from "../src/db.ts";
import { createOutboxRelay } from "../src/events.ts";
import { ensureStreams } from "../src/nats.ts";

const log = createLogger("test", "silent");
let pg: Postgres;
let nats: Nats;
let nc: NatsConnection;
let pool: Pool;
before(async () => {
  [pg, nats] = await Promise.all([startPostgres(), startNats()]);
  nc = await connect({ servers: nats.url });
  await ensureStreams(
    await nc.jetstreamManager(),
    [defineStream({ name: "AUTH", subjects: ["auth.>"], maxAgeMs: 60_000 })],
    log,
  );
  pool = createPool(await pg.createDatabase("relay"), log);
  await migrate(pool, [platformMigrations], log);
});
after(async () => {
  await pool?.end();
  await nc?.close();
  await Promise.all([nats?.stop(), pg?.stop()]);
});

test("events committed while the relay publishes a batch are published at once, not at the next poll", async () => {
  // A poll far beyond the wait below: only NOTIFY can make the relay go round in time.
  const relay = createOutboxRelay({ pool, js: nc.jetstream(), log, pollMs: 10 * 60_000 });
  await relay.start();
  try {
    const jsm = await nc.jetstreamManager();
    const before = (await jsm.streams.info("AUTH")).state.messages;
    // One commit after another while earlier ones are being published: most land mid-batch.
    const COUNT = 40;
    await Promise.all(
      Array.from({ length: COUNT }, (_, i) =>
        withTransaction(pool, (tx) =>
          addEvent(tx, UserSignedUpSchema, { userId: `u${i}`, email: `u${i}@example.com` }),
        ),
      ),
    );
    // A row leaves the outbox once its event is on the stream: wait for the last one to go.
    await waitUntil(
      async () => (await pool.query("SELECT count(*)::int AS n FROM outbox")).rows[0].n === 0,
      15_000,
      "the outbox is empty",
    );
    assert.equal((await jsm.streams.info("AUTH")).state.messages - before, COUNT, "each event once");
  } finally {
    await relay.stop();
  }
});
