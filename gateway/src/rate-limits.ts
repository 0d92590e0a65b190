// Rate limits shared by every gateway replica, kept in a NATS JetStream key-value bucket.
//
// Strict limits (methods whose contract says RATE_LIMIT_STRICT: sign-in, sign-up, codes,
// passwords) are exact across replicas: GCRA (the generic cell rate algorithm), one key per
// client holding its "theoretical arrival time", advanced with compare-and-set. A limit of N per
// minute allows a burst of N, then one call every 60/N s. A refusal is decided from what a replica
// already knows when it can (the stored time only moves forward), so a client hammering a limit
// costs no round trip; an admission costs one compare-and-set.
//
// General limits cost no round trip: sliding-window counters (one-minute windows, the previous
// window's count weighted by how much of it still overlaps the last minute) counted locally, each
// replica adding its counts to the shared per-window totals every RATE_LIMIT_SYNC_MS (1 s) and
// reading them back. The shared total may be overshot by what the other replicas admitted within
// one sync interval.
//
// NATS unreachable (or not yet connected): each replica keeps enforcing every limit on its own,
// so N replicas admit up to N times a limit; gateway_rate_limits_shared drops to 0 and a warning
// is logged. Strict limits degrade that way too rather than failing closed: refusing every
// sign-in while NATS is down would be an outage of its own, and auth's throttling of failed
// sign-ins per account and per address (in its database) stays exact.
import { Buffer } from "node:buffer";
import { type Logger, metrics, retryLater } from "@protomesh/platform";
import { type JetStreamClient, type KV, type NatsConnection, StorageType } from "nats";
import { Counter, Gauge } from "prom-client";

/** Calls per minute allowed per client address and per user; 0 turns a limit off. */
export interface RateLimits {
  ipPerMinute: number;
  userPerMinute: number;
  strictIpPerMinute: number;
  strictUserPerMinute: number;
  /** How often a replica adds its general counts to the shared totals. */
  syncMs: number;
}

/** The limits used when none are configured. */
export const defaultRateLimits: RateLimits = {
  ipPerMinute: 1200,
  userPerMinute: 600,
  strictIpPerMinute: 20,
  strictUserPerMinute: 10,
  syncMs: 1000,
};

export type Rule = "ip" | "user" | "strict_ip" | "strict_user";

/** The bucket that holds every replica's counts. */
export const RATE_LIMIT_BUCKET = "gateway_rate_limits";
const WINDOW_MS = 60_000;
// Longer than any state matters: a GCRA time is at most one window ahead, a counter one window old.
const BUCKET_TTL_MS = 2 * WINDOW_MS;
const STORE_TIMEOUT_MS = 1_000;
// After a failure the store is left alone this long: calls meanwhile are decided locally.
const STORE_BACKOFF_MS = 1_000;
const MAX_CAS_ATTEMPTS = 8;
const CAS_CONFLICT = 10071;

const limited = new Counter({
  name: "gateway_rate_limited_total",
  help: "Requests refused by a rate limit, by rule (ip, user, strict_ip, strict_user).",
  labelNames: ["rule"],
  registers: [metrics],
});
const shared = new Gauge({
  name: "gateway_rate_limits_shared",
  help: "1 while rate limits are shared through NATS; 0 while each replica limits on its own.",
  registers: [metrics],
});
const storeErrors = new Counter({
  name: "gateway_rate_limit_store_errors_total",
  help: "Rate-limit reads and writes that failed to reach NATS (decided locally instead).",
  registers: [metrics],
});

/** Thrown when a call is over a limit; its RetryInfo also sets `retry-after`. */
export function overLimit(rule: Rule, retryMs: number) {
  const who = rule === "ip" || rule === "strict_ip" ? "this address" : "this account";
  const seconds = Math.max(1, Math.ceil(retryMs / 1000));
  return retryLater(`too many requests from ${who}; try again in ${seconds} s`, retryMs);
}

/** A compare-and-set store of numbers: NATS KV, or nothing while NATS is away. */
interface Store {
  get(key: string): Promise<{ value: number; revision: number } | undefined>;
  /** Writes value if the key is still at `revision` (0: absent); undefined on a conflict. */
  put(key: string, value: number, revision: number): Promise<number | undefined>;
}

function kvStore(kv: KV): Store {
  return {
    async get(key) {
      const e = await kv.get(key);
      if (e?.operation !== "PUT") return undefined;
      const value = Number(Buffer.from(e.value).toString());
      // Only gateways write here; anything else is treated as no state rather than poison it.
      return { value: Number.isFinite(value) ? value : 0, revision: e.revision };
    },
    async put(key, value, revision) {
      try {
        return await kv.put(key, Buffer.from(String(value)), { previousSeq: revision });
      } catch (err) {
        if ((err as { api_error?: { err_code?: number } }).api_error?.err_code === CAS_CONFLICT)
          return undefined;
        throw err;
      }
    },
  };
}

/** KV keys allow [-/_=.a-zA-Z0-9]: an address (IPv6 colons) or a user id is encoded. */
const keyOf = (prefix: string, id: string) => `${prefix}.${Buffer.from(id).toString("base64url")}`;

/** The gateway's rate limiter. */
export interface RateLimiter {
  /** Throws RESOURCE_EXHAUSTED (with RetryInfo) when the address is over its limits. */
  checkAddress(address: string, strict: boolean): Promise<void>;
  /** Throws RESOURCE_EXHAUSTED (with RetryInfo) when the user is over their limits. */
  checkUser(userId: string, strict: boolean): Promise<void>;
  /** Shares the limits through NATS from now on (until then each replica counts alone). */
  attach(nc: NatsConnection, isConnected: () => boolean): void;
  /** True while limits are shared through NATS (false: this replica limits on its own). */
  sharing(): boolean;
  /** Pushes the last counts and stops syncing. */
  stop(): Promise<void>;
}

/** Creates the limiter; limits set to 0 are not checked at all. */
export function createRateLimiter(limits: RateLimits, log: Logger): RateLimiter {
  let store: Store | undefined;
  let connected = () => false;
  let binding: Promise<void> | undefined;
  let js: JetStreamClient | undefined;
  let backoffUntil = 0;
  let sharing = false;
  shared.set(0);
  const setSharing = (now: boolean, err?: unknown) => {
    if (now === sharing) return;
    sharing = now;
    shared.set(now ? 1 : 0);
    if (now) log.info("rate limits: shared through NATS");
    else
      log.warn(
        { err: (err as Error | undefined)?.message },
        "rate limits: NATS unreachable; limiting per replica",
      );
  };

  // The store when it should be usable now, else undefined (decide locally).
  const usable = (): Store | undefined => {
    if (!js || Date.now() < backoffUntil) return undefined;
    if (!connected()) {
      setSharing(false, new Error("disconnected"));
      return undefined;
    }
    if (!store) {
      const client = js;
      binding ??= client.views
        .kv(RATE_LIMIT_BUCKET, { history: 1, ttl: BUCKET_TTL_MS, storage: StorageType.Memory })
        .then(
          (kv) => {
            store = kvStore(kv);
            setSharing(true);
          },
          (err: unknown) => failed(err),
        )
        .finally(() => {
          binding = undefined;
        });
      return undefined;
    }
    return store;
  };
  const failed = (err: unknown) => {
    storeErrors.inc();
    backoffUntil = Date.now() + STORE_BACKOFF_MS;
    // The bucket may be gone (a NATS restart loses memory storage): bind, and create, again.
    store = undefined;
    setSharing(false, err);
  };
  const succeeded = () => setSharing(true);

  const strict = createGcra(() => usable(), failed, succeeded);
  const general = createWindowCounters(() => usable(), failed, succeeded);
  const timer = setInterval(() => void general.sync(), limits.syncMs);
  timer.unref();

  const check = async (rule: Rule, id: string, perMinute: number, exact: boolean) => {
    if (perMinute <= 0) return;
    const retryMs = exact
      ? await strict.take(keyOf(rule, id), perMinute)
      : general.take(keyOf(rule, id), perMinute);
    if (retryMs > 0) {
      limited.inc({ rule });
      throw overLimit(rule, retryMs);
    }
  };

  return {
    async checkAddress(address, isStrict) {
      await check("ip", address, limits.ipPerMinute, false);
      if (isStrict) await check("strict_ip", address, limits.strictIpPerMinute, true);
    },
    async checkUser(userId, isStrict) {
      await check("user", userId, limits.userPerMinute, false);
      if (isStrict) await check("strict_user", userId, limits.strictUserPerMinute, true);
    },
    attach(nc, isConnected) {
      // A short timeout: a call waits at most this long before it is decided locally.
      js = nc.jetstream({ timeout: STORE_TIMEOUT_MS });
      connected = isConnected;
      usable();
    },
    sharing: () => sharing,
    async stop() {
      clearInterval(timer);
      strict.stop();
      await binding;
      await general.sync();
    },
  };
}

/**
 * GCRA over the shared store: exact across replicas. Returns 0 when the call may go ahead,
 * else how long until it would be admitted.
 */
function createGcra(
  storeNow: () => Store | undefined,
  failed: (err: unknown) => void,
  succeeded: () => void,
) {
  // What this replica last saw of each key; revision -1: decided here while NATS was away.
  const known = new Map<string, { tat: number; revision: number }>();
  // One decision per key at a time on this replica, so it never races itself.
  const queues = new Map<string, Promise<unknown>>();

  const decide = (tat: number, now: number, perMinute: number) => {
    const next = Math.max(tat, now) + WINDOW_MS / perMinute;
    return { retryMs: Math.max(0, next - now - WINDOW_MS), next };
  };

  const takeNow = async (key: string, perMinute: number): Promise<number> => {
    let seen = known.get(key);
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      // The stored time only moves forward, and lives longer than any refusal it implies, so a
      // refusal from what this replica saw is the store's refusal too: no round trip.
      const { retryMs, next } = decide(seen?.tat ?? 0, Date.now(), perMinute);
      if (retryMs > 0) return retryMs;
      const store = storeNow();
      if (!store) {
        known.set(key, { tat: next, revision: -1 });
        return 0;
      }
      try {
        if (seen?.revision !== -1) {
          const revision = await store.put(key, next, seen?.revision ?? 0);
          if (revision !== undefined) {
            known.set(key, { tat: next, revision });
            succeeded();
            return 0;
          }
        }
        // Another replica wrote first (or this one decided alone meanwhile): read, decide again.
        const current = await store.get(key);
        const local = seen?.revision === -1 ? seen.tat : 0;
        seen = current
          ? { tat: Math.max(current.value, local), revision: current.revision }
          : { tat: local, revision: 0 };
      } catch (err) {
        failed(err);
        const alone = decide(known.get(key)?.tat ?? 0, Date.now(), perMinute);
        if (alone.retryMs > 0) return alone.retryMs;
        known.set(key, { tat: alone.next, revision: -1 });
        return 0;
      }
    }
    // Replicas keep overtaking each other on this key: it is being hammered.
    return WINDOW_MS / perMinute;
  };

  // Forget times already past: such a key admits its next call as a new one would be.
  const prune = setInterval(() => {
    const now = Date.now();
    for (const [key, v] of known) if (v.tat < now && !queues.has(key)) known.delete(key);
  }, WINDOW_MS);
  prune.unref();

  return {
    take(key: string, perMinute: number): Promise<number> {
      const result = (queues.get(key) ?? Promise.resolve()).then(() => takeNow(key, perMinute));
      const settled = result.then(
        () => {},
        () => {},
      );
      queues.set(key, settled);
      void settled.then(() => {
        if (queues.get(key) === settled) queues.delete(key);
      });
      return result;
    },
    stop: () => clearInterval(prune),
  };
}

/**
 * Sliding-window counters, counted locally and added to the shared totals on every sync.
 * Returns 0 when the call may go ahead, else how long until it would be.
 */
function createWindowCounters(
  storeNow: () => Store | undefined,
  failed: (err: unknown) => void,
  succeeded: () => void,
) {
  // shared: this window's total as last read from the store (this replica's pushed counts
  // included); pending: admitted here, not pushed yet; previous: the last window's total.
  interface Slot {
    window: number;
    shared: number;
    pending: number;
    previous: number;
  }
  const slots = new Map<string, Slot>();
  let syncing: Promise<void> | undefined;

  const push = async (store: Store, key: string, slot: Slot) => {
    const count = slot.pending;
    const storeKey = `${key}.${slot.window}`;
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const current = await store.get(storeKey);
      const total = (current?.value ?? 0) + count;
      if ((await store.put(storeKey, total, current?.revision ?? 0)) !== undefined) {
        slot.shared = total;
        slot.pending -= count;
        return;
      }
    }
  };

  const syncNow = async () => {
    const window = Math.floor(Date.now() / WINDOW_MS);
    const store = storeNow();
    const work: Promise<void>[] = [];
    for (const [key, slot] of slots) {
      // Older than the last window: it weighs nothing any more.
      if (slot.window < window - 1) {
        slots.delete(key);
        continue;
      }
      if (slot.pending > 0 && store) work.push(push(store, key, slot));
    }
    try {
      await Promise.all(work);
      if (work.length > 0) succeeded();
    } catch (err) {
      failed(err);
    }
  };

  return {
    take(key: string, perMinute: number): number {
      const now = Date.now();
      const window = Math.floor(now / WINDOW_MS);
      let slot = slots.get(key);
      if (slot?.window !== window) {
        const previous = slot?.window === window - 1 ? slot.shared + slot.pending : 0;
        slot = { window, shared: 0, pending: 0, previous };
        slots.set(key, slot);
      }
      const elapsed = now - window * WINDOW_MS;
      const current = slot.shared + slot.pending;
      const weight = (WINDOW_MS - elapsed) / WINDOW_MS;
      if (slot.previous * weight + current < perMinute) {
        slot.pending++;
        return 0;
      }
      // When the estimate falls below the limit: within this window as the previous one fades,
      // or, if this window alone is full, as it fades in turn after its end.
      const wait =
        current >= perMinute
          ? WINDOW_MS - elapsed + WINDOW_MS * (1 - perMinute / current)
          : WINDOW_MS * (1 - (perMinute - current) / slot.previous) - elapsed;
      return Math.max(1, Math.ceil(wait));
    },
    sync(): Promise<void> {
      syncing ??= syncNow().finally(() => {
        syncing = undefined;
      });
      return syncing;
    },
  };
}
