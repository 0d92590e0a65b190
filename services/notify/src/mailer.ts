import nodemailer from "nodemailer";

/** An email ready to send. */
export interface Email {
  to: string;
  subject: string;
  text: string;
  html: string;
  /** Becomes the Message-ID, so a mail server can drop a duplicate of the same event. */
  id: string;
}

/** Sends email over SMTP with nodemailer (pooled connections). */
export function createMailer(smtpUrl: string, from: string) {
  // Never a logger: nodemailer's logs carry message bodies, and bodies carry one-time codes
  // (config.ts refuses an SMTP_URL that turns them back on).
  const transport = nodemailer.createTransport(
    // Pooled: a new connection per mail costs a TCP handshake and an EHLO exchange each time.
    { pool: true, url: smtpUrl, logger: false, debug: false },
    { from },
  );
  return {
    async send(email: Email): Promise<void> {
      await transport.sendMail({
        to: email.to,
        subject: email.subject,
        text: email.text,
        html: email.html,
        messageId: `<${email.id}@protomesh>`,
      });
    },
    close: () => transport.close(),
  };
}

export type Mailer = ReturnType<typeof createMailer>;
