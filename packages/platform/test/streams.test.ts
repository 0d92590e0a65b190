// Streams belong to the service that emits their events: it creates them and keeps them as
// declared; a consumer never creates a producer's stream, it waits for it and binds.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserSignedUpSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { type Nats, startNats } from "@protomesh/devkit";
import {
  createHealthClient,
  createLogger,
  createServiceClient,
  defineStream,
  HEALTH,
  readServiceConfig,
  startService,
} from "@protomesh/platform";
import { startMesh, TEST_PASSWORD, uniqueEmail, waitUntil, within } from "@protomesh/testkit";
import { connect, type NatsConnection, StorageType } from "nats";
import { ensureStreams } from "../src/nats.ts";

let nats: Nats;
let nc: NatsConnection;
before(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url });
});
after(async () => {
  await nc?.close();
  await nats?.stop();
});

const log = createLogger("test", "silent");
const MINUTE = 60_000;

test("a declared stream is created with its dead-letter companion, and updated when its declaration changes", async () => {
  const jsm = await nc.jetstreamManager();
  const spec = defineStream({ name: "CODES", subjects: ["codes.>"], maxAgeMs: 10 * MINUTE });
  await ensureStreams(jsm, [spec], log);
  const created = await jsm.streams.info("CODES");
  assert.deepEqual(created.config.subjects, ["codes.>"]);
  assert.equal(created.config.max_age, 10 * MINUTE * 1e6);
  assert.ok(created.config.duplicate_window <= created.config.max_age);
  const dlq = await jsm.streams.info("CODES_DLQ");
  assert.equal(dlq.config.max_age, created.config.max_age, "dead letters live no longer than the events");
  assert.deepEqual(dlq.config.subjects, ["dlq.CODES.>"]);

  // The owner ships a shorter retention and another subject: the next start applies them.
  await ensureStreams(jsm, [{ ...spec, subjects: ["codes.>", "pins.>"], maxAgeMs: 5 * MINUTE }], log);
  const updated = await jsm.streams.info("CODES");
  assert.equal(updated.config.max_age, 5 * MINUTE * 1e6);
  assert.deepEqual(updated.config.subjects, ["codes.>", "pins.>"]);
  assert.equal((await jsm.streams.info("CODES_DLQ")).config.max_age, 5 * MINUTE * 1e6);
});

test("the legacy DLQ stream (full copies on dlq.>) is removed, so today's dead-letter streams can exist", async () => {
  const jsm = await nc.jetstreamManager();
  // As a NATS store from before declared streams: only the one DLQ stream on dlq.>.
  for await (const name of jsm.streams.names()) if (name.endsWith("_DLQ")) await jsm.streams.delete(name);
  await jsm.streams.add({ name: "DLQ", subjects: ["dlq.>"], storage: StorageType.File });
  await ensureStreams(jsm, [defineStream({ name: "LEGACY", subjects: ["legacy.>"], maxAgeMs: MINUTE })], log);
  await assert.rejects(jsm.streams.info("DLQ"), /stream not found/);
  assert.deepEqual((await jsm.streams.info("LEGACY_DLQ")).config.subjects, ["dlq.LEGACY.>"]);
});

test("a stream whose storage differs from its declaration stops the start with what to do", async () => {
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: "MEMO", subjects: ["memo.>"], storage: StorageType.Memory });
  await assert.rejects(
    ensureStreams(jsm, [defineStream({ name: "MEMO", subjects: ["memo.>"], maxAgeMs: MINUTE })], log),
    /MEMO has storage "memory".*nats stream rm MEMO/,
  );
});

test("declaring names that NATS would reject fails where it is written", () => {
  assert.throws(
    () => defineStream({ name: "codes", subjects: ["codes.>"], maxAgeMs: MINUTE }),
    /UPPER_SNAKE/,
  );
  assert.throws(() => defineStream({ name: "CODES", subjects: [], maxAgeMs: MINUTE }), /no subjects/);
});

test("a service that emits an event outside its own streams does not start", async () => {
  await assert.rejects(
    startService({
      config: readServiceConfig(
        "stray",
        0,
      )({
        NATS_URL: nats.url,
        DATABASE_URL: "postgres://nobody@127.0.0.1:1/none",
        MESH_SECRET: "x".repeat(32),
        GATEWAY_SECRET: "y".repeat(32),
      }),
      migrations: "/nonexistent",
      streams: [defineStream({ name: "STRAY", subjects: ["stray.>"], maxAgeMs: MINUTE })],
      emits: [UserSignedUpSchema],
      log,
      build: async () => ({ services: [] }),
    }),
    /auth\.user\.signed_up.*not in any stream/,
  );
});

test("a consumer never creates the producer's stream: it waits, then binds once the producer starts", async (t) => {
  const mesh = await startMesh({ services: ["notify"], gateway: false });
  t.after(() => mesh.stop());
  const own = await connect({ servers: mesh.nats.url });
  t.after(() => own.close());
  const jsm = await own.jetstreamManager();
  const health = createHealthClient(mesh.addr("notify"));
  t.after(() => health.close());
  assert.equal(await health.check(""), "SERVING", "ready: it can serve its calls");
  assert.equal(await health.check(HEALTH.events), "NOT_SERVING", "its consumer is not bound yet");
  await assert.rejects(jsm.streams.info("AUTH"), /stream not found/);

  // notify consumes events of auth (accounts), otp (codes), orders and chat: each producer
  // declares its stream.
  for (const producer of ["auth", "user", "otp", "catalog", "orders", "chat"] as const)
    await mesh.start(producer);
  await waitUntil(async () => (await health.check(HEALTH.events)) === "SERVING", 15_000, "notify bound");
  const info = await jsm.streams.info("AUTH");
  assert.equal(info.config.max_age, 30 * 24 * 60 * MINUTE * 1e6, "auth created AUTH as auth declares it");

  const email = uniqueEmail("late-producer");
  const auth = createServiceClient(AuthService, mesh.addr("auth"));
  t.after(() => auth.close());
  await auth.signUp({ email, password: TEST_PASSWORD, displayName: "Lu" });
  await mesh.smtp.waitFor((m) => m.to.includes(email));
});

test("a service whose streams cannot be set up yet serves anyway and retries until they can", async (t) => {
  const mesh = await startMesh({ services: ["auth"], gateway: false });
  t.after(() => mesh.stop());
  const own = await connect({ servers: mesh.nats.url });
  t.after(() => own.close());
  const jsm = await own.jetstreamManager();
  // Something in the way of user's USER stream: a stream of that name JetStream cannot convert.
  await jsm.streams.add({ name: "USER", subjects: ["user.>"], storage: StorageType.Memory });
  const user = await mesh.start("user", { eventsInBackground: true });
  const health = createHealthClient(mesh.addr("user"));
  t.after(() => health.close());
  assert.equal(await health.check(""), "SERVING");
  assert.equal(await health.check(HEALTH.events), "NOT_SERVING");

  await jsm.streams.delete("USER");
  await within(user.eventsReady, 15_000, "events started on a later attempt");
  assert.equal((await jsm.streams.info("USER")).config.storage, StorageType.File);
  await waitUntil(async () => (await health.check(HEALTH.events)) === "SERVING", 10_000, "events SERVING");
});
