// notify without infrastructure: configuration checks, what every template escapes and hides,
// and the development SMS sink.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConfigError } from "@protomesh/platform";
import { readNotifyConfig } from "../src/config.ts";
import { createSmsProvider } from "../src/sms.ts";
import {
  accountDeletedEmail,
  type CodePurpose,
  clean,
  codeEmail,
  codeSms,
  formatMoney,
  mfaChangedEmail,
  newDeviceEmail,
  passwordChangedEmail,
  plainEmail,
  signUpAttemptedEmail,
  welcomeEmail,
} from "../src/templates.ts";

const BASE = {
  DATABASE_URL: "postgres://localhost/notify",
  MESH_SECRET: "x".repeat(32),
  GATEWAY_SECRET: "y".repeat(32),
  NATS_URL: "nats://127.0.0.1:4222",
  SMTP_URL: "smtp://127.0.0.1:2525",
};

const configError = (env: Record<string, string>) => {
  try {
    readNotifyConfig({ ...BASE, ...env });
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.message;
  }
  return assert.fail("expected a configuration error");
};

describe("configuration", () => {
  test("SMS goes nowhere unless a provider is chosen", () => {
    assert.equal(readNotifyConfig(BASE).smsProvider, "none");
    assert.equal(readNotifyConfig({ ...BASE, SMS_PROVIDER: "console" }).smsProvider, "console");
  });

  test("the webhook provider needs an http(s) SMS_WEBHOOK_URL, named in the error", () => {
    assert.match(configError({ SMS_PROVIDER: "webhook" }), /SMS_WEBHOOK_URL is required/);
    assert.match(
      configError({ SMS_PROVIDER: "webhook", SMS_WEBHOOK_URL: "ftp://x" }),
      /SMS_WEBHOOK_URL must be a http or https URL/,
    );
    const ok = readNotifyConfig({
      ...BASE,
      SMS_PROVIDER: "webhook",
      SMS_WEBHOOK_URL: "https://sms.example/send",
    });
    assert.equal(ok.smsWebhookUrl, "https://sms.example/send");
  });

  test("an unknown provider, or a webhook URL that would be ignored, is refused", () => {
    assert.match(
      configError({ SMS_PROVIDER: "twilio" }),
      /SMS_PROVIDER must be one of none, console, webhook/,
    );
    assert.match(
      configError({ SMS_PROVIDER: "console", SMS_WEBHOOK_URL: "https://x" }),
      /SMS_WEBHOOK_URL is set but SMS_PROVIDER is not webhook/,
    );
  });

  test("an SMTP_URL that turns on nodemailer's logger or debug output is refused: they log bodies", () => {
    assert.match(
      configError({ SMTP_URL: "smtp://h:25/?debug=true" }),
      /SMTP_URL must not set logger or debug/,
    );
    assert.match(
      configError({ SMTP_URL: "smtp://h:25/?pool=true&logger=true" }),
      /SMTP_URL must not set logger or debug/,
    );
  });
});

describe("templates", () => {
  const purposes: CodePurpose[] = [
    "verify_email",
    "sign_in",
    "reset_password",
    "enable_mfa",
    "step_up",
    "other",
  ];

  test("a code is in the bodies of every code message and never in a subject or kind", () => {
    for (const purpose of purposes) {
      const m = { purpose, code: "402913", minutes: 10 };
      const mail = codeEmail("a@example.com", m, "id");
      const sms = codeSms(m);
      assert.ok(mail.text.includes("402913") && mail.html.includes("402913") && sms.text.includes("402913"));
      for (const s of [mail.subject, mail.kind, sms.subject, sms.kind]) assert.ok(!s.includes("402913"), s);
    }
    assert.equal(
      new Set(purposes.map((purpose) => codeSms({ purpose, code: "1", minutes: 1 }).kind)).size,
      purposes.length,
    );
  });

  test("every value from a user or an event is escaped in HTML and flattened to one line", () => {
    const evil = `<a href="x">'&'</a>\n\rInjected line\u202E\u200B`;
    const at = new Date(0);
    const email = "o'hara@example.com";
    const mails = [
      welcomeEmail({ email, displayName: evil }, "id"),
      signUpAttemptedEmail({ email, at }, "id"),
      newDeviceEmail({ email, device: evil, ip: evil, at }, "id"),
      passwordChangedEmail({ email, reset: false, at }, "id"),
      mfaChangedEmail({ email, method: "totp", enabled: true, at }, "id"),
      accountDeletedEmail({ email, at }, "id"),
    ];
    for (const mail of mails) {
      assert.ok(!/<a |'&'/.test(mail.html), mail.html);
      assert.ok(!mail.html.includes("o'hara"), "the apostrophe is escaped too");
      assert.ok(!/\r|\u202E|\u200B|\nInjected/.test(mail.text), mail.text);
      assert.ok(!/[\r\n]/.test(mail.subject));
    }
    assert.match(
      mails[2]?.html ?? "",
      /Device: &lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;\/a&gt; Injected line/,
    );
  });

  test("money is formatted exactly from integer minor units with the currency's own decimals", () => {
    const cases: Array<[string, bigint, string]> = [
      ["EUR", 1999n, "€19.99"],
      ["EUR", 5n, "€0.05"],
      ["EUR", 0n, "€0.00"],
      ["USD", 100_000_000_000n, "$1,000,000,000.00"],
      // Past 2^53 a float would round; bigint arithmetic and a decimal string do not.
      ["EUR", 9_007_199_254_740_993n, "€90,071,992,547,409.93"],
      ["JPY", 500n, "¥500"],
      ["KWD", 1234n, "KWD 1.234"],
      ["e$", 150n, "1.50 e$"],
    ];
    for (const [currency, amountMinor, shown] of cases) {
      assert.equal(formatMoney({ currency, amountMinor }).replace(/\u00a0/g, " "), shown);
    }
  });

  test("clean cuts long values and keeps ordinary text", () => {
    assert.equal(clean("Zoë  Ångström"), "Zoë Ångström");
    assert.equal([...clean("é".repeat(500))].length, 100);
  });

  test("SendEmail's HTML is its text, escaped, paragraph by paragraph", () => {
    const mail = plainEmail("a@example.com", "Hi\r\nBcc: x@y", "<b>1</b>\nline 2\n\n& more", "id");
    assert.equal(mail.html, "<p>&lt;b&gt;1&lt;/b&gt;<br>line 2</p>\n<p>&amp; more</p>");
    assert.equal(mail.subject, "Hi Bcc: x@y");
    assert.equal(mail.text, "<b>1</b>\nline 2\n\n& more");
  });
});

describe("development SMS sink", () => {
  test("prints the message as an indented block, not a JSON log line", async () => {
    const out: string[] = [];
    const sms = createSmsProvider({ smsProvider: "console", smsWebhookUrl: "", smsTimeoutMs: 1000 }, (s) =>
      out.push(s),
    );
    await sms.send("+4915123456789", "Protomesh: 123456 is your code\nsecond line", "id");
    assert.equal(
      out.join(""),
      "SMS to +4915123456789:\n    Protomesh: 123456 is your code\n    second line\n",
    );
  });

  test("with no provider, sending fails with a message naming SMS_PROVIDER", async () => {
    const sms = createSmsProvider({ smsProvider: "none", smsWebhookUrl: "", smsTimeoutMs: 1000 });
    await assert.rejects(sms.send("+4915123456789", "t", "id"), /SMS_PROVIDER=none/);
  });
});
