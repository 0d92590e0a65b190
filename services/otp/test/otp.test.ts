// otp over real gRPC with mesh credentials, on real PostgreSQL and NATS JetStream: codes reach
// the outside only in OtpIssued events, and every limit holds under concurrency.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { type OtpIssued, OtpIssuedSchema } from "@protomesh/contracts/otp/v1/events_pb";
import {
  Channel,
  type IssueRequest,
  OtpService,
  Purpose,
  VerifyResult,
} from "@protomesh/contracts/otp/v1/otp_pb";
import {
  createLogger,
  createMeshCredentials,
  createServiceClient,
  type RunningService,
  retryDelayMs,
  startService,
} from "@protomesh/platform";
import { assertCode, type Mesh, query, startMesh, waitUntil } from "@protomesh/testkit";
import { connect, type NatsConnection } from "nats";
import { pino } from "pino";
import { otpModule } from "../src/app.ts";
import { readOtpConfig } from "../src/config.ts";

type Otp = ReturnType<typeof createServiceClient<typeof OtpService>>;

/** Collects every OtpIssued published on a mesh's NATS, as notify would receive it. */
async function watchCodes(natsUrl: string) {
  const nc = await connect({ servers: natsUrl });
  const seen: OtpIssued[] = [];
  const sub = nc.subscribe("otp.code.issued");
  void (async () => {
    for await (const m of sub) seen.push(fromBinary(OtpIssuedSchema, m.data));
  })();
  await nc.flush();
  return { nc, seen };
}

let mesh: Mesh;
let otp: Otp;
let nc: NatsConnection;
let seen: OtpIssued[];

/** A client of an otp instance, calling as the mesh service "auth". */
const client = (port: number | string) =>
  createServiceClient(OtpService, typeof port === "number" ? `127.0.0.1:${port}` : port, {
    mesh: createMeshCredentials(mesh.env.otp.MESH_SECRET as string, "auth"),
  });

/** Another replica of otp on the same database, with settings of its own; stopped with the mesh. */
const replica = async (env: Record<string, string>) =>
  client((await mesh.start("otp", { env: { PORT: "0", ...env } })).port);

before(async () => {
  // No cooldown here, so a test can ask for a second code at once; the cooldown has its own replica.
  mesh = await startMesh({ services: ["otp"], gateway: false, env: { otp: { OTP_RESEND_COOLDOWN_S: "0" } } });
  otp = client(mesh.addr("otp"));
  ({ nc, seen } = await watchCodes(mesh.nats.url));
});
after(async () => {
  otp?.close();
  await nc?.close();
  await mesh?.stop();
});

const emailRequest = (subject: string = randomUUID()) => ({
  subject,
  purpose: Purpose.VERIFY_EMAIL,
  channel: Channel.EMAIL,
  destination: `${subject}@example.com`,
  userId: subject,
});

/** Issues a code and returns it as notify would receive it. */
async function issue(via: Otp, req: Partial<IssueRequest> & { subject: string }) {
  const full = { ...emailRequest(req.subject), ...req };
  const before = new Set(seen);
  const res = await via.issue(full);
  const event = await waitUntil(
    () => seen.find((e) => !before.has(e) && e.subject === full.subject && e.purpose === full.purpose),
    10_000,
    "OtpIssued event",
  );
  return { res, event, code: event.code };
}

const wrongCode = (code: string) => String((Number(code) + 1) % 1_000_000).padStart(6, "0");

describe("issue and verify", () => {
  test("a code works once: VERIFIED, then NO_CODE", async () => {
    const subject = randomUUID();
    const { res, event, code } = await issue(otp, { subject });
    assert.match(code, /^\d{6}$/);
    assert.equal(event.destination, `${subject}@example.com`);
    assert.equal(event.userId, subject);
    assert.ok(res.expireTime && res.resendTime);
    const expiresIn = timestampDate(res.expireTime).getTime() - Date.now();
    assert.ok(expiresIn > 590_000 && expiresIn <= 600_000, `lives 10 minutes, got ${expiresIn} ms`);
    const first = await otp.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code });
    assert.equal(first.result, VerifyResult.VERIFIED);
    const second = await otp.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code });
    assert.equal(second.result, VerifyResult.NO_CODE);
  });

  test("a code for one purpose never verifies another", async () => {
    const subject = randomUUID();
    const { code } = await issue(otp, { subject });
    const other = await otp.verify({ subject, purpose: Purpose.SIGN_IN, code });
    assert.equal(other.result, VerifyResult.NO_CODE);
  });

  test("a wrong code says how many tries are left; after 5 the code is dead", async () => {
    const subject = randomUUID();
    const { code } = await issue(otp, { subject });
    for (let left = 4; left >= 0; left--) {
      const r = await otp.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code: wrongCode(code) });
      assert.equal(r.result, VerifyResult.WRONG_CODE);
      assert.equal(r.attemptsLeft, left);
    }
    const dead = await otp.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code });
    assert.equal(dead.result, VerifyResult.LOCKED);
  });
});

describe("guessing", () => {
  const verify = (subject: string, code: string) =>
    otp.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code });

  test("50 parallel wrong guesses: at most 5 are evaluated, the rest are LOCKED, and the code is dead", async () => {
    const subject = randomUUID();
    const { code } = await issue(otp, { subject });
    const results = await Promise.all(Array.from({ length: 50 }, () => verify(subject, wrongCode(code))));
    const wrong = results.filter((r) => r.result === VerifyResult.WRONG_CODE);
    const locked = results.filter((r) => r.result === VerifyResult.LOCKED);
    assert.equal(wrong.length, 5, "exactly the 5 allowed tries are evaluated");
    assert.equal(locked.length, 45);
    assert.deepEqual(wrong.map((r) => r.attemptsLeft).sort(), [0, 1, 2, 3, 4]);
    assert.equal((await verify(subject, code)).result, VerifyResult.LOCKED, "the right code no longer works");
  });

  test("50 parallel submissions of the right code verify exactly once", async () => {
    const subject = randomUUID();
    const { code } = await issue(otp, { subject });
    const results = await Promise.all(Array.from({ length: 50 }, () => verify(subject, code)));
    assert.equal(results.filter((r) => r.result === VerifyResult.VERIFIED).length, 1);
    assert.equal(results.filter((r) => r.result === VerifyResult.NO_CODE).length, 49);
  });

  test("a new code does not reset the subject's budget of wrong tries until the window passes", async () => {
    // 10 failures per 3 s, on a replica of the same database.
    const short = await replica({ OTP_FAILURE_WINDOW_S: "3" });
    const subject = randomUUID();
    const verifyOn = (code: string) => short.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code });
    const first = await issue(short, { subject });
    for (let i = 0; i < 5; i++) await verifyOn(wrongCode(first.code));
    const second = await issue(short, { subject });
    const lefts = [];
    for (let i = 0; i < 5; i++) lefts.push((await verifyOn(wrongCode(second.code))).attemptsLeft);
    assert.deepEqual(lefts, [4, 3, 2, 1, 0]);
    const third = await issue(short, { subject });
    const locked = await verifyOn(third.code);
    assert.equal(locked.result, VerifyResult.LOCKED, "a fresh code is locked while the budget is spent");
    const delayMs = Number(locked.retryDelay?.seconds ?? 0) * 1000 + (locked.retryDelay?.nanos ?? 0) / 1e6;
    assert.ok(delayMs > 0 && delayMs <= 3_000, `retry_delay within the window, got ${delayMs} ms`);
    // Locked answers evaluate nothing, so asking again is safe: once the window passes, it works.
    await waitUntil(
      async () => (await verifyOn(third.code)).result === VerifyResult.VERIFIED,
      10_000,
      "verified after the window",
    );
    short.close();
  });
});

describe("limits on issuing", () => {
  test("a second code within the cooldown gets RESOURCE_EXHAUSTED with a retry delay", async () => {
    const strict = await replica({ OTP_RESEND_COOLDOWN_S: "60" });
    const subject = randomUUID();
    const { res } = await issue(strict, { subject });
    assert.ok(res.resendTime && res.expireTime);
    const resendIn = timestampDate(res.resendTime).getTime() - Date.now();
    assert.ok(resendIn > 55_000 && resendIn <= 60_000, `resend_time a minute away, got ${resendIn} ms`);
    const err = await assertCode(strict.issue(emailRequest(subject)), Code.ResourceExhausted, "second issue");
    assert.match(err.rawMessage, /try again later/);
    const delay = retryDelayMs(err);
    assert.ok(delay !== undefined && delay > 0 && delay <= 60_000, `retry delay ${delay} ms`);
    // Another purpose of the same subject has a cooldown of its own.
    await strict.issue({ ...emailRequest(subject), purpose: Purpose.SIGN_IN });
    strict.close();
  });

  test("at most 10 codes per subject and purpose in an hour", async () => {
    const subject = randomUUID();
    for (let i = 0; i < 10; i++) await otp.issue(emailRequest(subject));
    await assertCode(otp.issue(emailRequest(subject)), Code.ResourceExhausted, "11th issue");
  });
});

describe("callers and input", () => {
  test("a call without mesh credentials is refused, and a forged mesh token too", async () => {
    const outsider = createServiceClient(OtpService, mesh.addr("otp"));
    await assertCode(outsider.issue(emailRequest()), Code.PermissionDenied, "issue without a mesh token");
    await assertCode(
      outsider.verify({ subject: "s", purpose: Purpose.VERIFY_EMAIL, code: "123456" }),
      Code.PermissionDenied,
      "verify without a mesh token",
    );
    outsider.close();
    const forger = createServiceClient(OtpService, mesh.addr("otp"), {
      mesh: createMeshCredentials("a-secret-that-is-not-the-mesh-one-at-all", "auth"),
    });
    await assertCode(forger.issue(emailRequest()), Code.Unauthenticated, "forged mesh token");
    forger.close();
  });

  test("bad input gets INVALID_ARGUMENT naming the field", async () => {
    // Thunks: a call made early and awaited late would reject unobserved.
    const cases: [() => Promise<unknown>, RegExp][] = [
      [() => otp.issue({ ...emailRequest(), purpose: Purpose.UNSPECIFIED }), /^purpose: /],
      [() => otp.issue({ ...emailRequest(), channel: Channel.SMS }), /destination must be/],
      [
        () => otp.issue({ ...emailRequest(), channel: Channel.EMAIL, destination: "+4915112345678" }),
        /destination/,
      ],
      [() => otp.issue({ ...emailRequest(), subject: "" }), /^subject: /],
      [() => otp.issue({ ...emailRequest(), userId: "not-a-uuid" }), /^user_id: /],
      [() => otp.verify({ subject: "s", purpose: Purpose.VERIFY_EMAIL, code: "12345" }), /^code: /],
      [() => otp.verify({ subject: "s", purpose: Purpose.VERIFY_EMAIL, code: "12345a" }), /^code: /],
      [() => otp.verify({ subject: "s", purpose: Purpose.UNSPECIFIED, code: "123456" }), /^purpose: /],
    ];
    for (const [call, message] of cases) {
      const err = await assertCode(call(), Code.InvalidArgument);
      assert.match(err.rawMessage, message);
    }
  });

  test("an SMS code goes to an E.164 number", async () => {
    const subject = randomUUID();
    const { event } = await issue(otp, { subject, channel: Channel.SMS, destination: "+4915112345678" });
    assert.equal(event.channel, Channel.SMS);
    assert.equal(event.destination, "+4915112345678");
  });
});

describe("the stream keeps codes no longer than they live", () => {
  test("OTP and its dead letters have a max age of OTP_TTL_S", async () => {
    const jsm = await nc.jetstreamManager();
    for (const name of ["OTP", "OTP_DLQ"]) {
      const info = await jsm.streams.info(name);
      assert.equal(info.config.max_age, 600 * 1e9, `${name} keeps events 600 s`);
    }
  });
});

describe("logs", () => {
  let running: RunningService | undefined;
  after(() => running?.stop());

  test("no code ever appears in the service's logs, even at trace level; outcomes show in metrics", async () => {
    const spec = otpModule.create(otpModule.readConfig({ ...mesh.env.otp, PORT: "0", LOG_LEVEL: "trace" }));
    const log = createLogger("otp", "trace");
    const lines: string[] = [];
    // The platform's own logger (its redaction and level), writing here instead of stdout.
    (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] = {
      write: (s: string) => lines.push(s),
    };
    spec.log = log;
    running = await startService(spec);
    await running.eventsReady;
    const traced = client(running.port);
    const codes: string[] = [];
    for (let i = 0; i < 5; i++) {
      const subject = randomUUID();
      const { code } = await issue(traced, { subject });
      codes.push(code);
      await traced.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code: wrongCode(code) });
      await traced.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code });
    }
    traced.close();
    const scraped = await (await fetch(`http://127.0.0.1:${running.metricsPort}/metrics`)).text();
    const count = (labels: string) =>
      Number(new RegExp(`^protomesh_otp_verifies_total\\{${labels}\\} (\\d+)$`, "m").exec(scraped)?.[1] ?? 0);
    assert.ok(count('purpose="VERIFY_EMAIL",result="verified"') >= 5, "verified calls are counted");
    assert.ok(count('purpose="VERIFY_EMAIL",result="wrong-code"') >= 5, "wrong codes are counted");
    await running.stop();
    const text = lines.join("");
    assert.match(text, /code issued/, "the capture sees the service's logs");
    for (const code of codes) {
      assert.doesNotMatch(text, new RegExp(`(?<![0-9A-Za-z])${code}(?![0-9A-Za-z])`), "a code in the logs");
    }
  });
});

describe("expiry", () => {
  let short: Mesh | undefined;
  after(() => short?.stop());

  test("an expired code gives NO_CODE and is deleted, and the stream keeps events only that long", async () => {
    short = await startMesh({
      services: ["otp"],
      gateway: false,
      env: { otp: { OTP_TTL_S: "1", OTP_CLEANUP_INTERVAL_S: "1" } },
    });
    const watched = await watchCodes(short.nats.url);
    const via = createServiceClient(OtpService, short.addr("otp"), {
      mesh: createMeshCredentials(short.env.otp.MESH_SECRET as string, "auth"),
    });
    try {
      const subject = randomUUID();
      const res = await via.issue(emailRequest(subject));
      const event = await waitUntil(
        () => watched.seen.find((e) => e.subject === subject),
        10_000,
        "OtpIssued",
      );
      const expireAt = timestampDate(res.expireTime ?? assert.fail("no expire_time")).getTime();
      await waitUntil(() => Date.now() > expireAt, 5_000, "the code's expiry");
      const r = await via.verify({ subject, purpose: Purpose.VERIFY_EMAIL, code: event.code });
      assert.equal(r.result, VerifyResult.NO_CODE);
      const db = short.env.otp.DATABASE_URL as string;
      await waitUntil(
        async () => (await query(db, "SELECT 1 FROM otp_codes WHERE subject = $1", [subject])).length === 0,
        5_000,
        "the cleanup deletes the expired code",
      );
      const info = await (await watched.nc.jetstreamManager()).streams.info("OTP");
      assert.equal(info.config.max_age, 1e9);
    } finally {
      via.close();
      await watched.nc.close();
    }
  });
});

describe("configuration", () => {
  const base = {
    DATABASE_URL: "postgres://localhost/protomesh_otp",
    NATS_URL: "nats://localhost:4222",
    MESH_SECRET: "m".repeat(32),
    GATEWAY_SECRET: "g".repeat(32),
  };

  test("a missing or short OTP_HASH_KEY, and a bad OTP_* setting, stop the start naming each, never echoing the key", () => {
    assert.throws(() => readOtpConfig(base), /OTP_HASH_KEY is required/);
    const short = "short-secret-value";
    assert.throws(
      () => readOtpConfig({ ...base, OTP_HASH_KEY: short, OTP_TTL_S: "0", OTP_MAX_ATTEMPTS: "x" }),
      (err: Error) =>
        /OTP_HASH_KEY must be at least 32 characters/.test(err.message) &&
        /OTP_TTL_S/.test(err.message) &&
        /OTP_MAX_ATTEMPTS/.test(err.message) &&
        !err.message.includes(short),
    );
  });

  test("defaults: 10 minutes, a minute's cooldown, 5 tries per code, 10 per hour across codes", () => {
    const c = readOtpConfig({ ...base, OTP_HASH_KEY: "k".repeat(32) });
    assert.deepEqual(
      [c.port, c.ttlS, c.resendCooldownS, c.maxIssuesPerHour, c.maxAttempts, c.maxFailures, c.failureWindowS],
      [50054, 600, 60, 10, 5, 10, 3600],
    );
  });
});
