// notify's messages: one-time codes by email and SMS (through otp and straight from OtpIssued),
// the account emails auth's events cause, account deletion, SendEmail/SendSms, and that no code
// ever reaches a log line.
import assert from "node:assert/strict";
import { randomInt, randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { AuthService, MfaMethod } from "@protomesh/contracts/auth/v1/auth_pb";
import {
  EmailVerifiedSchema,
  MfaChangedSchema,
  PasswordChangedSchema,
  SignedInSchema,
  SignUpAttemptedSchema,
  UserDeletedSchema,
} from "@protomesh/contracts/auth/v1/events_pb";
import { Channel, NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { OtpIssuedSchema } from "@protomesh/contracts/otp/v1/events_pb";
import { Channel as OtpChannel, OtpService, Purpose, VerifyResult } from "@protomesh/contracts/otp/v1/otp_pb";
import { type ReceivedMail, type SmsPeer, startSmsPeer } from "@protomesh/devkit";
import { notifyModule } from "@protomesh/notify";
import {
  createLogger,
  createMeshCredentials,
  createServiceClient,
  type RunningService,
  startService,
} from "@protomesh/platform";
import {
  assertCode,
  gatewayClient,
  type Mesh,
  publishEvent,
  query,
  signUpAndSignIn,
  startMesh,
  uniqueEmail,
  waitUntil,
} from "@protomesh/testkit";
import { connect } from "nats";
import { pino } from "pino";
import PostalMime from "postal-mime";

const TEN_MINUTES_MS = 600_000;

let mesh: Mesh;
let sms: SmsPeer;
before(async () => {
  sms = await startSmsPeer();
  mesh = await startMesh({
    env: { notify: { SMS_PROVIDER: "webhook", SMS_WEBHOOK_URL: sms.url, RETRY_BACKOFF_MS: "100" } },
  });
});
after(async () => {
  await mesh?.stop();
  await sms?.stop();
});

/** A signed-in account and a gateway client of its inbox. */
async function account(tag: string) {
  const auth = gatewayClient(AuthService, mesh.url, "connect-json");
  const a = await signUpAndSignIn(auth, { email: uniqueEmail(tag) });
  const notify = gatewayClient(NotifyService, mesh.url, "connect-json", () => a.accessToken);
  return { ...a, notify };
}

/** The inbox row of this kind, once it is there (the row commits right after the send). */
const inboxRow = (n: Awaited<ReturnType<typeof account>>["notify"], kind: string) =>
  waitUntil(
    async () => (await n.listMyNotifications({})).notifications.find((x) => x.kind === kind),
    10_000,
    `a ${kind} row in the inbox`,
  );

/** A 6-digit code no other test uses. */
const freshCode = () => String(randomInt(100_000, 1_000_000));

/** A phone number no other test uses. */
const freshPhone = () => `+4915${randomInt(100_000_000, 1_000_000_000)}`;

/** OtpIssued as otp emits it. */
function otpIssued(o: {
  userId?: string;
  purpose: Purpose;
  channel?: OtpChannel;
  to: string;
  code: string;
  ttlMs?: number;
}) {
  const now = Date.now();
  return publishEvent(mesh.nats.url, OtpIssuedSchema, {
    codeId: randomUUID(),
    subject: o.userId ?? randomUUID(),
    userId: o.userId ?? "",
    purpose: o.purpose,
    channel: o.channel ?? OtpChannel.EMAIL,
    destination: o.to,
    code: o.code,
    occurTime: timestampFromDate(new Date(now)),
    expireTime: timestampFromDate(new Date(now + (o.ttlMs ?? TEN_MINUTES_MS))),
  });
}

const mailTo = (to: string, subject?: string) =>
  mesh.smtp.waitFor((m) => m.to.includes(to) && (subject === undefined || m.subject === subject), 15_000);

/** The HTML body of a received mail. */
const htmlOf = async (mail: ReceivedMail) => (await PostalMime.parse(mail.raw)).html ?? "";

/** Waits until a durable consumer has nothing left to deliver or settle. */
async function settled(stream: string, durable: string) {
  const nc = await connect({ servers: mesh.nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    await waitUntil(
      async () => {
        const ci = await jsm.consumers.info(stream, durable);
        return ci.num_pending === 0 && ci.num_ack_pending === 0;
      },
      15_000,
      `${durable} settled`,
    );
  } finally {
    await nc.close();
  }
}

describe("one-time codes", () => {
  test("a code issued by otp arrives by email, works, and the inbox records it without the code", async () => {
    const me = await account("otp-email");
    const otp = createServiceClient(OtpService, mesh.addr("otp"), {
      mesh: createMeshCredentials(mesh.env.notify.MESH_SECRET as string, "test"),
    });
    after(() => otp.close());
    // A subject of the test's own: auth may issue codes for the user id itself.
    const subject = `notify-test:${me.userId}`;
    await otp.issue({
      subject,
      purpose: Purpose.ENABLE_MFA,
      channel: OtpChannel.EMAIL,
      destination: me.email,
      userId: me.userId,
    });
    const mail = await mailTo(me.email, "Turn on two-step sign-in");
    const code = /\b(\d{6})\b/.exec(mail.text)?.[1];
    assert.ok(code, `a 6-digit code in the body: ${mail.text}`);
    assert.ok((await htmlOf(mail)).includes(code), "the HTML body shows the code too");
    const checked = await otp.verify({ subject, purpose: Purpose.ENABLE_MFA, code });
    assert.equal(checked.result, VerifyResult.VERIFIED, "the emailed code is the issued one");

    const row = await inboxRow(me.notify, "enable_mfa_code");
    assert.equal(row.channel, Channel.EMAIL);
    assert.equal(row.subject, "Turn on two-step sign-in");
    assert.ok(!row.subject.includes(code) && !mail.subject.includes(code));
  });

  test("every purpose has its own subject and words, and no subject holds the code", async () => {
    const email = uniqueEmail("purposes");
    const cases = [
      [Purpose.VERIFY_EMAIL, "Confirm your email address", /confirm your email address/],
      [Purpose.SIGN_IN, "Your sign-in code", /finish signing in/],
      [Purpose.RESET_PASSWORD, "Reset your password", /set a new password/],
      [Purpose.ENABLE_MFA, "Turn on two-step sign-in", /turn on two-step sign-in/],
      [Purpose.STEP_UP, "Confirm it's you", /confirm the change you asked for/],
    ] as const;
    for (const [purpose, subject, words] of cases) {
      const code = freshCode();
      await otpIssued({ purpose, to: email, code });
      const mail = await mailTo(email, subject);
      assert.ok(mail.text.includes(code), `${subject}: the code in the body`);
      assert.match(mail.text, words);
      assert.match(mail.text, /expires in 10 minutes/);
      assert.ok(
        !mail.subject.includes(code) && !JSON.stringify(mail.headers).includes(code),
        "no code in a header",
      );
    }
  });

  test("an SMS code goes through the provider, is retried when the provider refuses, and enters the inbox", async () => {
    const me = await account("otp-sms");
    const phone = freshPhone();
    const code = freshCode();
    const before = sms.requests();
    sms.refuse(1);
    const eventId = await otpIssued({
      userId: me.userId,
      purpose: Purpose.SIGN_IN,
      channel: OtpChannel.SMS,
      to: phone,
      code,
    });
    const got = await sms.waitFor((m) => m.to === phone, 15_000);
    assert.match(got.text, new RegExp(`^Protomesh: ${code} is your code to finish signing in\\.`));
    assert.equal(got.id, eventId, "the event id lets the provider drop a duplicate");
    assert.ok(sms.requests() - before >= 2, "the refused attempt was retried");
    const row = await inboxRow(me.notify, "sign_in_code");
    assert.equal(row.channel, Channel.SMS);
    assert.ok(!row.subject.includes(code));
  });

  test("a code that expired before it could be sent is not sent", async () => {
    const email = uniqueEmail("expired");
    const stale = freshCode();
    const live = freshCode();
    await otpIssued({ purpose: Purpose.SIGN_IN, to: email, code: stale, ttlMs: -1_000 });
    await otpIssued({ purpose: Purpose.SIGN_IN, to: email, code: live });
    await mailTo(email);
    await settled("OTP", "notify-code-messages");
    const mails = mesh.smtp.messages.filter((m) => m.to.includes(email));
    assert.equal(mails.length, 1);
    assert.ok(mails[0]?.text.includes(live));
  });
});

describe("account emails", () => {
  test("the welcome follows EmailVerified, with the display name escaped in HTML and kept to one line", async () => {
    const email = uniqueEmail("welcome");
    const userId = randomUUID();
    const displayName = `<script>alert(1)</script>\r\nPS: your password expired, reset at evil.example \u202Eexe.txt`;
    await publishEvent(mesh.nats.url, EmailVerifiedSchema, {
      userId,
      email,
      displayName,
      occurTime: timestampNow(),
    });
    const mail = await mailTo(email, "Welcome to Protomesh");
    const html = await htmlOf(mail);
    assert.ok(!html.includes("<script>"), html);
    assert.ok(html.includes("&lt;script&gt;alert(1)&lt;/script&gt;"), html);
    const greeting = mail.text.split("\n")[0] ?? "";
    assert.match(
      greeting,
      /^Hi <script>alert\(1\)<\/script> PS: your password expired/,
      "one line in the text body",
    );
    assert.ok(!mail.text.includes("\u202E"), "no bidi override");
    const rows = await query<{ kind: string }>(
      mesh.env.notify.DATABASE_URL as string,
      "SELECT kind FROM notifications WHERE user_id = $1",
      [userId],
    );
    assert.deepEqual(rows, [{ kind: "welcome" }]);
  });

  test("someone signing up with your email tells you, and how to reset a forgotten password", async () => {
    const me = await account("attempt");
    await publishEvent(mesh.nats.url, SignUpAttemptedSchema, {
      userId: me.userId,
      email: me.email,
      occurTime: timestampNow(),
    });
    const mail = await mailTo(me.email, "Someone tried to sign up with your email");
    assert.match(mail.text, /Forgot password/);
    assert.match(mail.text, /nothing in your account changed/);
    await inboxRow(me.notify, "signup_attempt");
  });

  test("a sign-in from a new device alerts with device, address and time; a known device does not", async () => {
    const me = await account("alert");
    const at = new Date("2030-01-02T03:04:05Z");
    const base = { userId: me.userId, email: me.email, ip: "203.0.113.7", occurTime: timestampFromDate(at) };
    await publishEvent(mesh.nats.url, SignedInSchema, {
      ...base,
      sessionId: randomUUID(),
      device: "Known",
      newDevice: false,
    });
    await publishEvent(mesh.nats.url, SignedInSchema, {
      ...base,
      sessionId: randomUUID(),
      device: `Firefox <img src=x onerror=alert(1)> on Linux`,
      newDevice: true,
    });
    const mail = await mailTo(me.email, "New sign-in to your Protomesh account");
    assert.match(mail.text, /Device: Firefox <img src=x onerror=alert\(1\)> on Linux/);
    assert.match(mail.text, /Address: 203\.0\.113\.7/);
    assert.match(mail.text, /Time: 2030-01-02 03:04 UTC/);
    const html = await htmlOf(mail);
    assert.ok(
      html.includes("Firefox &lt;img src=x onerror=alert(1)&gt; on Linux") && !html.includes("<img"),
      html,
    );
    await settled("AUTH", "notify-login-alerts");
    assert.equal(
      mesh.smtp.messages.filter((m) => m.to.includes(me.email) && m.subject === mail.subject).length,
      1,
      "one alert, for the new device only",
    );
    await inboxRow(me.notify, "new_device_sign_in");
  });

  test("a changed or reset password and MFA turned on or off each email the owner", async () => {
    const me = await account("security");
    const events = [
      () =>
        publishEvent(mesh.nats.url, PasswordChangedSchema, {
          userId: me.userId,
          email: me.email,
          reset: false,
        }),
      () =>
        publishEvent(mesh.nats.url, PasswordChangedSchema, {
          userId: me.userId,
          email: me.email,
          reset: true,
        }),
      () =>
        publishEvent(mesh.nats.url, MfaChangedSchema, {
          userId: me.userId,
          email: me.email,
          method: MfaMethod.TOTP,
          enabled: true,
        }),
      () =>
        publishEvent(mesh.nats.url, MfaChangedSchema, {
          userId: me.userId,
          email: me.email,
          method: MfaMethod.EMAIL,
          enabled: false,
        }),
    ];
    for (const publish of events) await publish();
    assert.match(
      (await mailTo(me.email, "Your password was changed")).text,
      /other sessions were signed out/,
    );
    assert.match((await mailTo(me.email, "Your password was reset")).text, /Every session was signed out/);
    assert.match((await mailTo(me.email, "Two-step sign-in turned on")).text, /an authenticator app/);
    assert.match((await mailTo(me.email, "Two-step sign-in turned off")).text, /codes sent to this address/);
    for (const kind of ["password_changed", "password_reset", "mfa_enabled", "mfa_disabled"]) {
      await inboxRow(me.notify, kind);
    }
  });

  test("account deletion empties the inbox and confirms to the address, keeping no row", async () => {
    const me = await account("deleted");
    await publishEvent(mesh.nats.url, SignUpAttemptedSchema, { userId: me.userId, email: me.email });
    await inboxRow(me.notify, "signup_attempt");
    await publishEvent(mesh.nats.url, UserDeletedSchema, {
      userId: me.userId,
      email: me.email,
      occurTime: timestampNow(),
    });
    const mail = await mailTo(me.email, "Your Protomesh account was deleted");
    assert.match(mail.text, /This is the last email we send you/);
    await settled("AUTH", "notify-account-deletions");
    const rows = await query(
      mesh.env.notify.DATABASE_URL as string,
      "SELECT kind FROM notifications WHERE user_id = $1",
      [me.userId],
    );
    assert.deepEqual(rows, []);
    assert.deepEqual((await me.notify.listMyNotifications({})).notifications, []);

    // An event about them that arrives late writes no row and sends no mail.
    const mailsBefore = mesh.smtp.messages.filter((m) => m.to.includes(me.email)).length;
    await publishEvent(mesh.nats.url, SignedInSchema, {
      userId: me.userId,
      email: me.email,
      sessionId: randomUUID(),
      device: "Late",
      ip: "203.0.113.9",
      newDevice: true,
    });
    await settled("AUTH", "notify-login-alerts");
    assert.equal(mesh.smtp.messages.filter((m) => m.to.includes(me.email)).length, mailsBefore);
    const late = await query(
      mesh.env.notify.DATABASE_URL as string,
      "SELECT kind FROM notifications WHERE user_id = $1",
      [me.userId],
    );
    assert.deepEqual(late, []);
  });
});

describe("SendEmail and SendSms", () => {
  const client = (addr = mesh.addr("notify")) => {
    const c = createServiceClient(NotifyService, addr, {
      mesh: createMeshCredentials(mesh.env.notify.MESH_SECRET as string, "test"),
    });
    after(() => c.close());
    return c;
  };

  test("SendEmail sends at once, escapes the text into HTML, and records it in the user's inbox", async () => {
    const me = await account("send-email");
    const res = await client().sendEmail({
      to: me.email,
      subject: "Your order\r\nBcc: victim@example.com",
      text: "Order <b>42</b> shipped.\n\nThanks & bye",
      userId: me.userId,
      kind: "order_shipped",
    });
    // The subject's CR LF is folded to a space: no header injection.
    const mail = await mailTo(me.email, "Your order Bcc: victim@example.com");
    assert.deepEqual(mail.to, [me.email]);
    assert.equal(mail.text, "Order <b>42</b> shipped.\n\nThanks & bye");
    const html = await htmlOf(mail);
    assert.ok(
      html.includes("Order &lt;b&gt;42&lt;/b&gt; shipped.") && html.includes("Thanks &amp; bye"),
      html,
    );
    const row = await inboxRow(me.notify, "order_shipped");
    assert.equal(row.id, res.notificationId);
  });

  test("SendEmail without a user sends, and records nothing", async () => {
    const email = uniqueEmail("send-anon");
    const res = await client().sendEmail({ to: email, subject: "Hello", text: "Hi", kind: "hello" });
    const mail = await mailTo(email, "Hello");
    assert.equal(mail.messageId, `<${res.notificationId}@protomesh>`);
    const rows = await query(
      mesh.env.notify.DATABASE_URL as string,
      "SELECT 1 FROM notifications WHERE id = $1",
      [res.notificationId],
    );
    assert.deepEqual(rows, []);
  });

  test("SendEmail and SendSms for a deleted user are refused with FAILED_PRECONDITION: nothing sent or recorded", async () => {
    const me = await account("send-deleted");
    await publishEvent(mesh.nats.url, UserDeletedSchema, {
      userId: me.userId,
      email: me.email,
      occurTime: timestampNow(),
    });
    await settled("AUTH", "notify-account-deletions");
    const mailsBefore = mesh.smtp.messages.length;
    const smsBefore = sms.requests();
    const phone = freshPhone();
    for (const [name, call] of [
      [
        "SendEmail",
        () => client().sendEmail({ to: me.email, subject: "s", text: "t", userId: me.userId, kind: "late" }),
      ],
      ["SendSms", () => client().sendSms({ to: phone, text: "t", userId: me.userId, kind: "late" })],
    ] as const) {
      const err = await assertCode(call(), Code.FailedPrecondition, name);
      assert.match(err.rawMessage, /user_id: the account was deleted/);
    }
    assert.equal(mesh.smtp.messages.length, mailsBefore, "no mail");
    assert.equal(sms.requests(), smsBefore, "no SMS");
    const rows = await query(
      mesh.env.notify.DATABASE_URL as string,
      "SELECT 1 FROM notifications WHERE user_id = $1",
      [me.userId],
    );
    assert.deepEqual(rows, []);
  });

  test("SendSms sends through the provider and records it in the user's inbox", async () => {
    const me = await account("send-sms");
    const phone = freshPhone();
    const res = await client().sendSms({
      to: phone,
      text: "Your parcel is here",
      userId: me.userId,
      kind: "parcel",
    });
    const got = await sms.waitFor((m) => m.to === phone);
    assert.equal(got.text, "Your parcel is here");
    const row = await inboxRow(me.notify, "parcel");
    assert.equal(row.id, res.notificationId);
    assert.equal(row.channel, Channel.SMS);
  });

  test("a refusing provider or mail server gives UNAVAILABLE and leaves no inbox row", async (t) => {
    const me = await account("refused");
    sms.refuse(1);
    await assertCode(
      client().sendSms({ to: freshPhone(), text: "x", userId: me.userId, kind: "refused_sms" }),
      Code.Unavailable,
      "SendSms",
    );
    // A replica whose mail server is gone (nothing listens on port 1).
    const broken = await mesh.start("notify", { env: { PORT: "0", SMTP_URL: "smtp://127.0.0.1:1" } });
    t.after(() => broken.stop());
    const err = await assertCode(
      client(`127.0.0.1:${broken.port}`).sendEmail({
        to: me.email,
        subject: "s",
        text: "t",
        userId: me.userId,
        kind: "refused_email",
      }),
      Code.Unavailable,
      "SendEmail",
    );
    assert.match(err.rawMessage, /mail server did not take the message/);
    const rows = await query(
      mesh.env.notify.DATABASE_URL as string,
      "SELECT kind FROM notifications WHERE user_id = $1 AND kind LIKE 'refused%'",
      [me.userId],
    );
    assert.deepEqual(rows, []);
  });

  test("only the mesh may call them: a user's token or no credentials get PERMISSION_DENIED", async (t) => {
    const me = await account("outsider");
    const outside = createServiceClient(NotifyService, mesh.addr("notify"));
    t.after(() => outside.close());
    const req = { to: me.email, subject: "s", text: "t", kind: "spam" };
    await assertCode(outside.sendEmail(req), Code.PermissionDenied, "no credentials");
    await assertCode(
      outside.sendEmail(req, { accessToken: me.accessToken }),
      Code.PermissionDenied,
      "a user's token",
    );
    await assertCode(
      outside.sendSms({ to: freshPhone(), text: "t", kind: "spam" }),
      Code.PermissionDenied,
      "SendSms",
    );
    const bad = await assertCode(
      client().sendSms({ to: "0151 123", text: "t", kind: "x" }),
      Code.InvalidArgument,
      "bad number",
    );
    assert.match(bad.rawMessage, /\bto\b/);
  });
});

describe("logs", () => {
  let replica: RunningService | undefined;
  after(() => replica?.stop());

  test("no code ever appears in notify's logs while it sends codes, even at trace level and on retries", async () => {
    const log = createLogger("notify", "trace");
    const lines: string[] = [];
    // The platform's own logger (its redaction and level), writing here instead of stdout.
    (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] = {
      write: (s: string) => lines.push(s),
    };
    const spec = notifyModule.create(
      notifyModule.readConfig({
        ...mesh.env.notify,
        PORT: "0",
        LOG_LEVEL: "trace",
        SMS_PROVIDER: "webhook",
        SMS_WEBHOOK_URL: sms.url,
        RETRY_BACKOFF_MS: "100",
      }),
    );
    spec.log = log;
    // The only replica, so it handles every event.
    await mesh.services.notify?.stop();
    replica = await startService(spec);
    await replica.eventsReady;

    const email = uniqueEmail("logs");
    const phone = freshPhone();
    const codes = [freshCode(), freshCode(), freshCode()];
    sms.refuse(2);
    await otpIssued({ purpose: Purpose.VERIFY_EMAIL, to: email, code: codes[0] as string });
    await otpIssued({
      purpose: Purpose.RESET_PASSWORD,
      channel: OtpChannel.SMS,
      to: phone,
      code: codes[1] as string,
    });
    const direct = createServiceClient(NotifyService, `127.0.0.1:${replica.port}`, {
      mesh: createMeshCredentials(mesh.env.notify.MESH_SECRET as string, "test"),
    });
    after(() => direct.close());
    await direct.sendSms({ to: phone, text: `Your code is ${codes[2]}`, kind: "code" }).catch(() => {});
    await mailTo(email, "Confirm your email address");
    await sms.waitFor((m) => m.to === phone && m.text.includes(codes[1] as string), 15_000);
    await replica.stop();
    const text = lines.join("");
    assert.match(text, /will retry/, "the capture sees the retry of the refused SMS");
    for (const code of codes) {
      assert.doesNotMatch(text, new RegExp(`(?<![0-9])${code}(?![0-9])`), "a code in the logs");
    }
  });
});
