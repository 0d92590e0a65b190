import { randomUUID } from "node:crypto";
import { type Logger, type NatsConnection, type NatsPart, periodic } from "@protomesh/platform";
import type { KV } from "nats";

/**
 * Who is online: a user with an open Subscribe on any replica. Each replica counts its own
 * streams per user and keeps one NATS KV key per user it serves (`<user>.<replica>`), put when
 * the user's first stream opens, refreshed every third of the TTL, deleted when the last one
 * closes. A replica that dies refreshes nothing: its keys expire within the TTL.
 */
export function createPresence(opts: { bucket: string; ttlMs: number; log: Logger }) {
  const replica = randomUUID().replaceAll("-", "");
  const open = new Map<string, number>();
  /** Users whose last stream here ended because the replica stops: offline at a graceful detach. */
  const stopped = new Set<string>();
  let kv: KV | undefined;
  const keyOf = (userId: string) => `${userId}.${replica}`;
  const put = (userId: string) =>
    kv?.put(keyOf(userId), "").catch((err: unknown) => opts.log.warn({ err }, "presence not recorded"));
  const remove = (userId: string) => kv?.delete(keyOf(userId)).catch(() => {});

  const refresher = periodic({
    what: "presence refresh",
    intervalMs: Math.max(500, Math.floor(opts.ttlMs / 3)),
    log: opts.log,
    async task(signal) {
      for (const userId of open.keys()) {
        if (signal.aborted) return;
        await put(userId);
      }
    },
  });

  const part: NatsPart = {
    async attach(nc: NatsConnection) {
      kv = await nc.jetstream().views.kv(opts.bucket, { ttl: opts.ttlMs, history: 1 });
      await Promise.all([...open.keys()].map(put));
    },
    /** A graceful stop: this replica's users are offline now (unless another replica has them). */
    async detach() {
      await Promise.all([...open.keys(), ...stopped].map(remove));
      stopped.clear();
      kv = undefined;
    },
  };

  return {
    nats: part,
    worker: refresher,
    /** A stream of the user opened on this replica. */
    async enter(userId: string): Promise<void> {
      const n = (open.get(userId) ?? 0) + 1;
      open.set(userId, n);
      if (n === 1) await put(userId);
    },
    /**
     * A stream of the user closed. `stopping` (the replica stops or is killed): the key is left
     * to the graceful detach, or to expire if the process dies.
     */
    leave(userId: string, stopping: boolean): void {
      const n = (open.get(userId) ?? 1) - 1;
      if (n > 0) {
        open.set(userId, n);
        return;
      }
      open.delete(userId);
      if (stopping) stopped.add(userId);
      else void remove(userId);
    },
    /** Whether the user has a stream open here. */
    isLocal: (userId: string) => open.has(userId),
    /** Which of the users are online on any replica; all offline while NATS is away. */
    async online(userIds: string[]): Promise<Set<string>> {
      const found = new Set(userIds.filter((id) => open.has(id)));
      const rest = userIds.filter((id) => !found.has(id));
      if (!kv || rest.length === 0) return found;
      for await (const key of await kv.keys(rest.map((id) => `${id}.*`))) found.add(key.split(".")[0] ?? "");
      return found;
    },
  };
}

export type Presence = ReturnType<typeof createPresence>;
