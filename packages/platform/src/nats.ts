import { connect, type JetStreamManager, type NatsConnection, RetentionPolicy, StorageType } from "nats";
import type { Logger } from "./logger.ts";

/** A NATS connection that reconnects forever and knows whether it is connected right now. */
export async function connectNats(url: string, name: string, log: Logger) {
  const nc = await connect({
    servers: url,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    waitOnFirstConnect: true,
  });
  let connected = true;
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") {
        connected = false;
        log.warn("nats disconnected");
      } else if (s.type === "reconnect") {
        connected = true;
        log.info("nats reconnected");
      }
    }
  })();
  return { nc, isConnected: () => connected && !nc.isClosed() };
}

/** The JetStream stream that holds a subject's events: one stream per owning service. */
export function streamOf(subject: string): string {
  const owner = subject.split(".")[0];
  if (!owner) throw new Error(`bad event subject "${subject}"`);
  return owner.toUpperCase();
}

export const DEAD_LETTER_STREAM = "DLQ";

const DAY_NS = 24 * 3600 * 1e9;

/** Creates the stream if missing (idempotent across replicas and restarts). */
export async function ensureStream(
  jsm: JetStreamManager,
  name: string,
  subjects: string[],
  maxAgeDays = 30,
): Promise<void> {
  try {
    await jsm.streams.info(name);
  } catch {
    try {
      await jsm.streams.add({
        name,
        subjects,
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        max_age: maxAgeDays * DAY_NS,
        // The window within which a republished Nats-Msg-Id is dropped as a duplicate.
        duplicate_window: 2 * 60 * 1e9,
      });
    } catch (err) {
      // Another replica may have created it between our two calls.
      await jsm.streams.info(name).catch(() => {
        throw err;
      });
    }
  }
}

export type { NatsConnection };
