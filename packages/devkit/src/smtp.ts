import type { AddressInfo } from "node:net";
import PostalMime from "postal-mime";
import { SMTPServer, type SMTPServerEnvelope } from "smtp-server";

/** One mail as the SMTP server received it. */
export interface ReceivedMail {
  /** Envelope sender (MAIL FROM). */
  from: string;
  /** Envelope recipients (RCPT TO), which include Bcc. */
  to: string[];
  subject: string;
  text: string;
  messageId: string;
  /** Lower-cased names, unfolded values, first occurrence wins. */
  headers: Record<string, string>;
  raw: string;
}

/** A local SMTP server that keeps every mail it receives. */
export interface Smtp {
  port: number;
  url: string;
  messages: ReceivedMail[];
  /** The first received mail matching predicate, already here or still to come. */
  waitFor(predicate: (mail: ReceivedMail) => boolean, timeoutMs?: number): Promise<ReceivedMail>;
  stop(): Promise<void>;
}

interface Waiter {
  predicate: (mail: ReceivedMail) => boolean;
  resolve: (mail: ReceivedMail) => void;
  reject: (error: Error) => void;
}

const DEFAULT_WAIT_MS = 10_000;

/** Starts an SMTP server on 127.0.0.1 (no TLS, no auth) that collects mail for tests and the dev runner. */
export async function startSmtp(): Promise<Smtp> {
  const messages: ReceivedMail[] = [];
  const waiters = new Set<Waiter>();

  const settle = (waiter: Waiter, mail: ReceivedMail): boolean => {
    try {
      if (!waiter.predicate(mail)) return false;
      waiter.resolve(mail);
    } catch (error) {
      waiter.reject(error instanceof Error ? error : new Error(String(error)));
    }
    waiters.delete(waiter);
    return true;
  };

  const server = new SMTPServer({
    disabledCommands: ["STARTTLS"],
    authOptional: true,
    logger: false,
    // A client that keeps its connection open (a pooled transport) must not hold stop() for 30 s.
    closeTimeout: 1_000,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.once("error", callback);
      stream.once("end", () => {
        // Answering only once the mail is stored means a sender's sendMail() resolves after it is here.
        receivedMail(Buffer.concat(chunks), session.envelope).then((mail) => {
          messages.push(mail);
          for (const waiter of waiters) settle(waiter, mail);
          callback();
        }, callback);
      });
    },
  });

  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve((server.server.address() as AddressInfo).port);
    });
  });
  // Client sockets that reset mid-session are the client's problem, not a reason to crash the test.
  server.on("error", () => {});

  let stopping: Promise<void> | undefined;
  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    messages,
    waitFor(predicate, timeoutMs = DEFAULT_WAIT_MS) {
      return new Promise<ReceivedMail>((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        const waiter: Waiter = {
          predicate,
          resolve: (mail) => {
            clearTimeout(timer);
            resolve(mail);
          },
          reject: (error) => {
            clearTimeout(timer);
            reject(error);
          },
        };
        for (const mail of messages) if (settle(waiter, mail)) return;
        if (stopping) {
          reject(new Error("waitFor: the SMTP server is stopped"));
          return;
        }
        waiters.add(waiter);
        timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(
            new Error(`waitFor: no matching mail within ${timeoutMs} ms; received: ${summary(messages)}`),
          );
        }, timeoutMs);
      });
    },
    stop() {
      stopping ??= new Promise<void>((resolve) => {
        for (const waiter of waiters) waiter.reject(new Error("waitFor: the SMTP server was stopped"));
        waiters.clear();
        server.close(() => resolve());
      });
      return stopping;
    },
  };
}

async function receivedMail(raw: Buffer, envelope: SMTPServerEnvelope): Promise<ReceivedMail> {
  const parsed = await PostalMime.parse(raw);
  const headers: Record<string, string> = {};
  for (const { key, value } of parsed.headers) headers[key] ??= value;
  return {
    from: envelope.mailFrom === false ? "" : envelope.mailFrom.address,
    to: envelope.rcptTo.map((recipient) => recipient.address),
    subject: parsed.subject ?? "",
    // A single-part body keeps the line break that precedes SMTP's closing "."; the sender's text
    // ended before it.
    text: (parsed.text ?? "").replace(/\n$/, ""),
    messageId: parsed.messageId ?? "",
    headers,
    raw: raw.toString("utf8"),
  };
}

function summary(messages: ReceivedMail[]): string {
  if (messages.length === 0) return "nothing";
  return messages.map((mail) => `\n  to ${mail.to.join(", ")}: "${mail.subject}"`).join("");
}
