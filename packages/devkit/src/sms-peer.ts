import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

/** One text message as the SMS peer received it. */
export interface ReceivedSms {
  to: string;
  text: string;
  id: string;
}

/** A local HTTP server standing in for an SMS provider's webhook: it keeps what it receives. */
export interface SmsPeer {
  /** The URL to POST to (notify's SMS_WEBHOOK_URL). */
  url: string;
  messages: ReceivedSms[];
  /** How many POSTs it has answered, accepted or refused. */
  requests(): number;
  /** Refuses the next `count` requests with 503, as a provider having an outage would. */
  refuse(count: number): void;
  /** The first received message matching predicate, already here or still to come. */
  waitFor(predicate: (sms: ReceivedSms) => boolean, timeoutMs?: number): Promise<ReceivedSms>;
  stop(): Promise<void>;
}

const DEFAULT_WAIT_MS = 10_000;

/** Starts an SMS webhook peer on 127.0.0.1: POST JSON {to, text, id} answers 202, anything else 400. */
export async function startSmsPeer(): Promise<SmsPeer> {
  const messages: ReceivedSms[] = [];
  const waiters = new Set<{
    predicate: (sms: ReceivedSms) => boolean;
    resolve: (sms: ReceivedSms) => void;
  }>();
  let refusals = 0;
  let requests = 0;

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      requests++;
      if (refusals > 0) {
        refusals--;
        res.writeHead(503).end();
        return;
      }
      let sms: ReceivedSms | undefined;
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Partial<ReceivedSms>;
        if (typeof body.to === "string" && typeof body.text === "string" && typeof body.id === "string") {
          sms = { to: body.to, text: body.text, id: body.id };
        }
      } catch {
        // Not JSON: answered below like any other malformed request.
      }
      if (req.method !== "POST" || !sms) {
        res.writeHead(400).end();
        return;
      }
      messages.push(sms);
      for (const w of waiters) {
        if (w.predicate(sms)) {
          waiters.delete(w);
          w.resolve(sms);
        }
      }
      res.writeHead(202).end();
    });
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port));
  });

  return {
    url: `http://127.0.0.1:${port}/sms`,
    messages,
    requests: () => requests,
    refuse(count) {
      refusals = count;
    },
    waitFor(predicate, timeoutMs = DEFAULT_WAIT_MS) {
      const found = messages.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const waiter = {
          predicate,
          resolve: (sms: ReceivedSms) => {
            clearTimeout(timer);
            resolve(sms);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`waitFor: no matching SMS within ${timeoutMs} ms; received ${messages.length}`));
        }, timeoutMs);
        waiters.add(waiter);
      });
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
