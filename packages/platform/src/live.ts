import type { NatsConnection, Subscription } from "nats";
import { createHub } from "./hub.ts";

/** Something a service runs on the NATS connection once the platform has one. */
export interface NatsPart {
  /** Called once, when NATS is first connected (nats.js reconnects by itself after that). */
  attach(nc: NatsConnection): Promise<void>;
  /** Called before the connection drains at shutdown. */
  detach(): Promise<void>;
}

/**
 * Live notices to the streams open on any replica, over NATS core: `publish(key, data)` reaches
 * every listener of the key, whichever replica it is on. Each replica subscribes only to the
 * keys it has listeners for (`<subject>.<key>`), so a notice travels only where it is wanted.
 * At most once: a notice published while NATS is away is lost, so the durable truth must live
 * elsewhere (a database the listener reads to fill a gap); a notice costs latency, never data.
 */
export function createLiveFeed(opts: { subject: string; queueLimit?: number }) {
  const hub = createHub<Uint8Array>(opts.queueLimit ? { queueLimit: opts.queueLimit } : {});
  const subs = new Map<string, Subscription>();
  let nc: NatsConnection | undefined;

  const subscribe = (key: string) => {
    if (!nc || subs.has(key)) return;
    subs.set(
      key,
      nc.subscribe(`${opts.subject}.${key}`, {
        callback: (err, m) => {
          if (!err) hub.publish(key, m.data);
        },
      }),
    );
  };
  const unsubscribeIfIdle = (key: string) => {
    if (hub.has(key)) return;
    subs.get(key)?.unsubscribe();
    subs.delete(key);
  };

  const feed = {
    async attach(conn: NatsConnection) {
      nc = conn;
      subs.clear();
      for (const key of hub.keys()) subscribe(key);
      await conn.flush();
    },
    async detach() {
      nc = undefined;
      for (const sub of subs.values()) sub.unsubscribe();
      subs.clear();
    },
    /** Sends a notice to the key's listeners on every replica (dropped when NATS is away). */
    publish(key: string, data: Uint8Array): void {
      try {
        nc?.publish(`${opts.subject}.${key}`, data);
      } catch {
        // Closed or draining: listeners find the change in the database.
      }
    },
    /** Hands a notice to the key's listeners on this replica only (e.g. a check of its own). */
    publishLocal(key: string, data: Uint8Array): void {
      hub.publish(key, data);
    },
    /**
     * Notices for the key from the moment this resolves (the subscription is known to NATS by
     * then), queued until iterated; ends when the signal aborts.
     */
    async listen(key: string, signal: AbortSignal): Promise<AsyncGenerator<Uint8Array>> {
      const notices = hub.listen(key, signal);
      signal.addEventListener("abort", () => unsubscribeIfIdle(key), { once: true });
      subscribe(key);
      await nc?.flush().catch(() => {});
      return notices;
    },
    /** Keys with listeners on this replica. */
    keys: () => hub.keys(),
    /** Open listeners on this replica. */
    get listeners() {
      return hub.listeners;
    },
  };
  return feed satisfies NatsPart & Record<string, unknown>;
}

export type LiveFeed = ReturnType<typeof createLiveFeed>;
