import { randomUUID } from "node:crypto";
import { type Logger, type NatsConnection, type NatsPart, periodic } from "@protomesh/platform";
import { type KV, StorageType } from "nats";

const DIRECT = new TextEncoder();
const PUT_WINDOW = 128;

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
  let conn: NatsConnection | undefined;
  /** A write failed: the bucket may be gone (an in-memory stream does not survive a NATS restart). */
  let failed: unknown;
  const keyOf = (userId: string) => `${userId}.${replica}`;
  const put = async (userId: string) => {
    await kv?.put(keyOf(userId), "").catch((err: unknown) => {
      failed = err;
    });
  };
  // A window of puts in flight: one at a time, 10,000 users took longer than the refresh
  // interval (their keys could expire while they were online); all at once floods NATS.
  const putAll = async (userIds: string[], signal?: AbortSignal) => {
    for (let i = 0; i < userIds.length && !signal?.aborted; i += PUT_WINDOW) {
      await Promise.all(userIds.slice(i, i + PUT_WINDOW).map(put));
    }
  };
  const remove = (userId: string) => kv?.delete(keyOf(userId)).catch(() => {});
  // In memory: presence is rebuilt within a third of the TTL by the refreshes, and every
  // replica rewrites each of its users that often, so disk would only add writes. Creating it
  // again is a no-op while it exists.
  const openBucket = (nc: NatsConnection) =>
    nc.jetstream().views.kv(opts.bucket, {
      ttl: opts.ttlMs,
      history: 1,
      allow_direct: true,
      storage: StorageType.Memory,
    });

  /**
   * Whether any replica holds a live key for the user: direct gets of the next message on
   * `<user>.*` (one round trip each, no consumer), skipping deletion markers. Expired keys are
   * gone from the stream.
   */
  const heldAnywhere = async (userId: string): Promise<boolean> => {
    const nc = conn;
    if (!nc) return false;
    let seq = 0;
    // A few replicas at most: each one's key is one message.
    for (let i = 0; i < 64; i++) {
      const query = JSON.stringify({ seq, next_by_subj: `$KV.${opts.bucket}.${userId}.*` });
      let found: Awaited<ReturnType<NatsConnection["request"]>>;
      try {
        // SendMessage waits on this: a NATS that does not answer at once means offline.
        found = await nc.request(`$JS.API.DIRECT.GET.KV_${opts.bucket}`, DIRECT.encode(query), {
          timeout: 250,
        });
      } catch (err) {
        // NATS is away: offline as far as we can tell.
        opts.log.debug({ err }, "presence lookup failed");
        return false;
      }
      // 404: nothing (more) under the user.
      if (found.headers?.hasError) return false;
      if (!found.headers?.get("KV-Operation")) return true;
      seq = Number(found.headers.get("Nats-Sequence")) + 1;
    }
    return false;
  };

  const refresher = periodic({
    what: "presence refresh",
    intervalMs: Math.max(500, Math.floor(opts.ttlMs / 3)),
    log: opts.log,
    async task(signal) {
      if (failed !== undefined && conn) {
        opts.log.warn({ err: failed }, "presence not recorded; opening its bucket again");
        failed = undefined;
        kv = await openBucket(conn).catch((err: unknown) => {
          failed = err;
          return kv;
        });
      }
      await putAll([...open.keys()], signal);
    },
  });

  const part: NatsPart = {
    async attach(nc: NatsConnection) {
      kv = await openBucket(nc);
      conn = nc;
      await putAll([...open.keys()]);
    },
    /** A graceful stop: this replica's users are offline now (unless another replica has them). */
    async detach() {
      await Promise.all([...open.keys(), ...stopped].map(remove));
      stopped.clear();
      kv = undefined;
      conn = undefined;
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
      const held = await Promise.all(userIds.map(async (id) => open.has(id) || (await heldAnywhere(id))));
      return new Set(userIds.filter((_, i) => held[i]));
    },
  };
}

export type Presence = ReturnType<typeof createPresence>;
