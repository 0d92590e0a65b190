// notify: the welcome email (after EmailVerified) exactly once across crashes, the inbox (list and live stream, on any
// replica, through the gateway with every protocol), and dead letters that can be replayed.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { Code } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { EmailVerifiedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { NotificationAddedSchema } from "@protomesh/contracts/notify/v1/events_pb";
import { Channel, NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { startSmtp } from "@protomesh/devkit";
import { createServiceClient, listDeadLetters, metrics } from "@protomesh/platform";
import {
  failure,
  gatewayClient,
  MAIL,
  type Mesh,
  nextWhere,
  type Protocol,
  publishEvent,
  query,
  signUpAndSignIn,
  startMesh,
  uniqueEmail,
  waitUntil,
  within,
} from "@protomesh/testkit";
import { type ConsumerInfo, connect, type JetStreamManager } from "nats";

const DURABLE = "notify-welcome-emails-verified";
const PASSWORD = "correct horse battery";
const root = new URL("../../..", import.meta.url).pathname;

/** A NATS connection of the test's own, closed after the test. */
async function natsManager(m: Mesh, t: { after(fn: () => Promise<void>): void }) {
  const nc = await connect({ servers: m.nats.url, maxReconnectAttempts: -1 });
  t.after(() => nc.close());
  return { nc, jsm: await nc.jetstreamManager() };
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

/**
 * An auth client through the gateway whose sign-up and sign-in set their own deadline: the mesh's
 * 300 ms unary default is for the streaming tests, and bcrypt on a loaded machine takes longer.
 */
function patientAuth(url: string) {
  const auth = gatewayClient(AuthService, url, "connect-json");
  const timeoutMs = 20_000;
  return {
    ...auth,
    signUp: (req: Parameters<typeof auth.signUp>[0]) => auth.signUp(req, { timeoutMs }),
    signIn: (req: Parameters<typeof auth.signIn>[0]) => auth.signIn(req, { timeoutMs }),
  };
}

/** Signs up and in through the gateway; returns the user's id, email and access token. */
async function signedUp(m: Mesh, tag: string) {
  const auth = patientAuth(m.url);
  const email = uniqueEmail(tag);
  const { userId, tokens } = await signUpAndSignIn(auth, { email, password: PASSWORD, displayName: "Nia" });
  return { userId, email, token: tokens?.accessToken ?? "" };
}

let mesh: Mesh;
before(async () => {
  // A short unary default at the gateway: streams must not inherit it.
  mesh = await startMesh({ gatewayEnv: { DEFAULT_TIMEOUT_MS: "300" } });
});
after(() => mesh?.stop());

describe("the inbox", () => {
  test("ListMyNotifications lists the verification code and the welcome, newest first, page by page", async () => {
    const { userId, email, token } = await signedUp(mesh, "inbox");
    const notify = gatewayClient(NotifyService, mesh.url, "connect-json", () => token);
    const inbox = () => notify.listMyNotifications({ pageSize: 1 }, { timeoutMs: 10_000 });
    // Sign-up sent the verification code; the welcome follows auth's EmailVerified.
    await waitUntil(async () => (await inbox()).notifications.length > 0, 15_000, "the code in the inbox");
    await injectWelcome(mesh, userId, email);
    const first = await waitUntil(
      async () => {
        const page = await inbox();
        return page.notifications[0]?.kind === "welcome" ? page : undefined;
      },
      15_000,
      "the welcome email on top of the inbox",
    );
    assert.equal(first.notifications[0]?.channel, Channel.EMAIL);
    assert.equal(first.notifications[0]?.subject, MAIL.welcome);
    const second = await notify.listMyNotifications({ pageSize: 1, pageToken: first.nextPageToken });
    assert.deepEqual(
      second.notifications.map((n) => [n.kind, n.subject]),
      [["verification_code", MAIL.verify]],
    );
    assert.equal(second.nextPageToken, "", "two notifications: no third page");
    const bad = await failure(notify.listMyNotifications({ pageToken: "forged" }, { timeoutMs: 10_000 }));
    assert.equal(bad.code, Code.InvalidArgument);
  });

  for (const protocol of ["connect-json", "grpc-web", "grpc"] as Protocol[]) {
    test(`WatchMyNotifications streams new notifications through the gateway (${protocol}), past the unary deadline`, async () => {
      const auth = patientAuth(mesh.url);
      const email = uniqueEmail(`watch-${protocol}`);
      // Sign in needs no verified account.
      const { userId, tokens } = await signUpAndSignIn(auth, {
        email,
        password: PASSWORD,
        displayName: "Wes",
      });
      const notify = gatewayClient(NotifyService, mesh.url, protocol, () => tokens?.accessToken);
      const ctl = new AbortController();
      const stream = notify.watchMyNotifications({}, { signal: ctl.signal })[Symbol.asyncIterator]();
      // The verification code may reach the stream too: the welcome is the one looked for.
      const welcome = nextWhere(
        stream,
        (m) => m.notification?.kind === "welcome",
        15_000,
        "the welcome on the stream",
      );
      // Time passing is what is tested: longer than the gateway's unary default (300 ms).
      await delay(800);
      await injectWelcome(mesh, userId, email);
      await welcome;
      ctl.abort();
    });
  }

  test("a notification sent by one notify replica reaches a stream open on another", async (t) => {
    const second = await mesh.start("notify", { env: { PORT: "0" } });
    t.after(() => second.stop());
    const { userId, email, token } = await signedUp(mesh, "replica");
    const direct = createServiceClient(NotifyService, `127.0.0.1:${second.port}`);
    t.after(() => direct.close());
    const ctl = new AbortController();
    const stream = direct
      .watchMyNotifications({}, { accessToken: token, signal: ctl.signal })
      [Symbol.asyncIterator]();
    const welcome = nextWhere(
      stream,
      (m) => m.notification?.kind === "welcome",
      15_000,
      "the welcome on the other replica",
    );
    // Which replica consumes is up to JetStream; the stream must see it either way.
    await injectWelcome(mesh, userId, email);
    await welcome;
    ctl.abort();
  });

  test("every stream a user holds gets each notification once, each with its own content", async (t) => {
    const { userId, token } = await signedUp(mesh, "streams");
    const direct = createServiceClient(NotifyService, mesh.addr("notify"));
    t.after(() => direct.close());
    const ctl = new AbortController();
    t.after(() => ctl.abort());
    const streams = [0, 1, 2].map(() =>
      direct.watchMyNotifications({}, { accessToken: token, signal: ctl.signal })[Symbol.asyncIterator](),
    );
    const add = (subject: string) =>
      publishEvent(mesh.nats.url, NotificationAddedSchema, {
        userId,
        notification: { id: randomUUID(), channel: Channel.EMAIL, kind: "test", subject },
      });
    // A stream listens once its call reaches notify: "ready" notifications until each has one.
    for (const stream of streams) {
      const seen = nextWhere(stream, (m) => m.notification?.subject === "ready", 15_000, "a ready notice");
      await waitUntil(
        async () => {
          await add("ready");
          return within(seen, 300, "").then(
            () => true,
            () => false,
          );
        },
        15_000,
        "every stream listens",
      );
    }
    for (const subject of ["first", "second", "third"]) await add(subject);
    for (const stream of streams) {
      const subjects: string[] = [];
      while (subjects.at(-1) !== "third") {
        const { value } = await within(stream.next(), 10_000, "the next notification");
        const subject = value?.notification?.subject ?? "";
        if (subject !== "ready") subjects.push(subject);
      }
      assert.deepEqual(subjects, ["first", "second", "third"]);
    }
  });

  test("stopping notify ends an open stream at once with UNAVAILABLE, so the client reconnects", async (t) => {
    const replica = await mesh.start("notify", { env: { PORT: "0", SHUTDOWN_TIMEOUT_MS: "30000" } });
    const { userId, email, token } = await signedUp(mesh, "shutdown");
    const direct = createServiceClient(NotifyService, `127.0.0.1:${replica.port}`);
    t.after(() => direct.close());
    const stream = direct.watchMyNotifications({}, { accessToken: token })[Symbol.asyncIterator]();
    // One notification through it proves the stream is open on the server.
    const welcome = nextWhere(stream, (m) => m.notification?.kind === "welcome", 15_000, "the welcome");
    await injectWelcome(mesh, userId, email);
    await welcome;
    const ended = failure({ [Symbol.asyncIterator]: () => stream });
    const started = Date.now();
    await within(replica.stop(), 10_000, "stop with an open stream");
    const err = await within(ended, 5_000, "the stream's end");
    assert.equal(err.code, Code.Unavailable);
    assert.ok(Date.now() - started < 5_000, "stop did not wait out its 30 s drain timeout");
  });
});

/** How many events the welcome consumer handled with this outcome, in this process. */
async function handled(outcome: string) {
  const counter = await metrics.getSingleMetric("protomesh_events_handled_total")?.get();
  return (
    counter?.values.find((v) => v.labels.consumer === DURABLE && v.labels.outcome === outcome)?.value ?? 0
  );
}

/** EmailVerified for a user, as auth would emit it, so notify sends a welcome email. */
const injectWelcome = (m: Mesh, userId: string, email: string) =>
  publishEvent(m.nats.url, EmailVerifiedSchema, { userId, email, displayName: "Again" });

test("the welcome email is sent once when notify crashes before its ack", async (t) => {
  let crashed: string | undefined;
  const m: Mesh = await startMesh({
    env: { notify: { ACK_WAIT_MS: "1000" } },
    beforeAck: {
      // Runs inside notify after its transaction committed: crash there, so it never acks.
      notify: async (eventId) => {
        if (crashed) return;
        crashed = eventId;
        void m.services.notify?.kill();
        throw new Error("notify crashed before its ack");
      },
    },
  });
  t.after(() => m.stop());
  const email = uniqueEmail("crash");
  const userId = randomUUID();
  await injectWelcome(m, userId, email);
  await m.smtp.waitFor((mail) => mail.to.includes(email));
  await waitUntil(() => crashed !== undefined, 10_000, "notify crashed after sending, before its ack");

  await m.start("notify", { beforeAck: async () => {} });
  const { jsm } = await natsManager(m, t);
  const ci = await settled(jsm, (c) => c.delivered.consumer_seq >= 2);
  assert.ok(ci.delivered.consumer_seq >= 2, "JetStream redelivered the unacked event");
  assert.equal(
    m.smtp.messages.filter((mail) => mail.to.includes(email)).length,
    1,
    "exactly one welcome email",
  );
  const rows = await query<{ event_id: string }>(
    m.env.notify.DATABASE_URL as string,
    "SELECT event_id FROM notifications WHERE user_id = $1",
    [userId],
  );
  assert.deepEqual(rows, [{ event_id: crashed }]);
});

test("an event that keeps failing is dead-lettered without its payload, and a replay delivers it", async (t) => {
  const m = await startMesh({ env: { notify: { RETRY_BACKOFF_MS: "50" } } });
  t.after(() => m.stop());
  await m.smtp.stop();
  const email = uniqueEmail("poison");
  const userId = randomUUID();
  const retriedBefore = await handled("retry");
  await injectWelcome(m, userId, email);

  const { jsm } = await natsManager(m, t);
  const [dead] = await waitUntil(
    async () => {
      const letters = await listDeadLetters(jsm);
      return letters.length > 0 ? letters : undefined;
    },
    20_000,
    "a dead letter",
  );
  assert.ok(dead);
  assert.equal(dead.stream, "AUTH_DLQ");
  assert.equal(dead.consumer, DURABLE);
  assert.equal(dead.subject, "auth.user.email_verified");
  assert.equal(dead.eventType, "protomesh.auth.v1.EmailVerified");
  assert.ok(dead.error, "the last error is recorded");
  const stored = await jsm.streams.getMessage("AUTH_DLQ", { seq: dead.seq });
  assert.equal(stored.data.length, 0, "no payload: a secret in an event never lands in a second place");
  const dlq = await jsm.streams.info("AUTH_DLQ");
  const source = await jsm.streams.info("AUTH");
  assert.equal(dlq.config.max_age, source.config.max_age, "dead letters live no longer than their events");
  await settled(jsm);
  // Keyed by user, so attempts are retried in place: count them, not JetStream's deliveries.
  assert.equal((await handled("retry")) - retriedBefore, 4, "tried exactly maxDeliver (5) times");
  assert.equal(
    (
      await query(m.env.notify.DATABASE_URL as string, "SELECT 1 FROM notifications WHERE user_id = $1", [
        userId,
      ])
    ).length,
    0,
  );

  // The operator fixes the mail server and replays with the documented command.
  const smtp = await startSmtp();
  t.after(() => smtp.stop());
  await m.services.notify?.stop();
  await m.start("notify", { env: { SMTP_URL: smtp.url } });
  const run = (...args: string[]) =>
    spawnSync(process.execPath, ["--import", "tsx", "scripts/dlq.ts", ...args], {
      cwd: root,
      env: { ...process.env, NATS_URL: m.nats.url },
      encoding: "utf8",
    });
  const listed = run("list");
  assert.equal(listed.status, 0, listed.stderr);
  assert.match(listed.stdout, new RegExp(`AUTH_DLQ ${dead.seq} .*${DURABLE}.*${dead.eventId}`));
  const replayed = run("replay", "AUTH_DLQ", String(dead.seq));
  assert.equal(replayed.status, 0, replayed.stderr);
  await smtp.waitFor((mail) => mail.to.includes(email));
  assert.equal((await listDeadLetters(jsm)).length, 0, "the dead letter is gone once replayed");
  const again = run("replay", "AUTH_DLQ", String(dead.seq));
  assert.notEqual(again.status, 0, "a dead letter is replayed once");
  assert.match(again.stderr, /no dead letter AUTH_DLQ/);
});
