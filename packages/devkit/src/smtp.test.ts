import assert from "node:assert/strict";
import { test } from "node:test";
import nodemailer from "nodemailer";
import { type Smtp, startSmtp } from "./smtp.ts";

function transport(smtp: Smtp) {
  return nodemailer.createTransport({ host: "127.0.0.1", port: smtp.port, secure: false, ignoreTLS: true });
}

test("receives a UTF-8 mail from nodemailer with its subject, text and envelope", async (t) => {
  const smtp = await startSmtp();
  t.after(() => smtp.stop());
  assert.equal(smtp.url, `smtp://127.0.0.1:${smtp.port}`);

  const subject = "Grüße – bestätige deine E-Mail ✓";
  const text = `Hallo Jürgen,\n\ndein Code lautet 482913. ${"Sehr lange Zeile mit Umlauten äöü. ".repeat(5)}\nBis bald!`;
  const info = await transport(smtp).sendMail({
    from: "Protomesh <no-reply@protomesh.test>",
    to: "juergen@example.test",
    bcc: "audit@example.test",
    subject,
    text,
  });

  const mail = await smtp.waitFor((m) => m.to.includes("juergen@example.test"));
  assert.equal(mail.from, "no-reply@protomesh.test");
  assert.deepEqual(mail.to, ["juergen@example.test", "audit@example.test"]);
  assert.equal(mail.subject, subject);
  assert.equal(mail.text, text);
  assert.equal(mail.messageId, info.messageId);
  assert.equal(mail.headers.to, "juergen@example.test");
  assert.match(mail.raw, /^Content-Transfer-Encoding: quoted-printable/m);
  assert.deepEqual(smtp.messages, [mail]);
});

test("waitFor resolves on a mail that arrives later and picks text/plain out of multipart", async (t) => {
  const smtp = await startSmtp();
  t.after(() => smtp.stop());

  const waiting = smtp.waitFor((m) => m.subject.startsWith("Deine Bestellung"));
  const text = "ご注文ありがとうございます。注文番号は 42 です。";
  await transport(smtp).sendMail({
    from: "shop@protomesh.test",
    to: "kunde@example.test",
    subject: "Deine Bestellung 42 ist unterwegs 🚚",
    text,
    html: "<p>ご注文ありがとうございます。</p>",
  });

  const mail = await waiting;
  assert.equal(mail.subject, "Deine Bestellung 42 ist unterwegs 🚚");
  assert.equal(mail.text, text);
  assert.match(mail.headers["content-type"] ?? "", /^multipart\/alternative/);
});

test("waitFor rejects after its timeout, naming what did arrive", async (t) => {
  const smtp = await startSmtp();
  t.after(() => smtp.stop());
  await transport(smtp).sendMail({
    from: "a@protomesh.test",
    to: "b@example.test",
    subject: "Hallo",
    text: "x",
  });

  await assert.rejects(
    smtp.waitFor((m) => m.subject === "never sent", 200),
    /no matching mail within 200 ms; received: \n {2}to b@example\.test: "Hallo"/,
  );
  const pending = smtp.waitFor(() => false);
  await smtp.stop();
  await assert.rejects(pending, /stopped/);
});
