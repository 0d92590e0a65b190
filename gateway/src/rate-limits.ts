// Rate limits shared by every gateway replica, kept in a NATS JetStream key-value bucket.
//
// Strict limits (methods whose contract says RATE_LIMIT_STRICT: sign-in, sign-up, codes,
// passwords) are exact across replicas: GCRA (the generic cell rate algorithm), one key per
// client holding its "theoretical arrival time", advanced with compare-and-set. A limit of N per
// minute allows a burst of N, then one call every 60/N s. A refusal is decided from what a replica
// already knows when it can (the stored time only moves forward), so a client hammering a limit
// costs no round trip; an admission always costs one compare-and-set.
//
// General limits are counted locally first, in fixed one-minute windows, and each replica adds
// its counts to the shared totals every second (RATE_LIMIT_SYNC_MS): a call costs no round trip,
// and the shared total may be overshot by what the other replicas admitted in one sync interval.
// A fixed window lets a client spend up to twice its limit around a window boundary.
//
// NATS unreachable (or not yet connected): each replica keeps enforcing every limit on its own,
// so N replicas admit up to N times a limit, and says so in logs and
// gateway_rate_limit_store_errors_total. Strict limits degrade that way too rather than failing
// closed: refusing every sign-in while NATS is down would be an outage of its own, and auth's
// throttling of failed sign-ins per account and per address (in its database) stays exact.
import { Buffer } from "node:buffer";
import { type Logger, metrics, retryLater } from "@protomesh/platform";
import { type JetStreamClient, type KV, type NatsConnection, StorageType } from "nats";
import { Counter } from "prom-client";

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
const storeErrors = new Counter({
  name: "gateway_rate_limit_store_errors_total",
  help: "Rate-limit updates that could not reach NATS; limits were applied per replica meanwhile.",
  registers: [metrics],
});

/** Thrown when a call is over a limit; the caller sets `retry-after` from `retryAfterS`. */
export function overLimit(rule: Rule, retryMs: number) {
  const who = rule === "ip" || rule === "strict_ip" ? "this address" : "this account";
  const seconds = Math.max(1, Math.ceil(retryMs / 1000));
  const err = retryLater(`too many requests from ${who}; try again in ${seconds} s`, retryMs);
  return Object.assign(err, { retryAfterS: seconds });
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
      return { value: Number(Buffer.from(e.value).toString()), revision: e.revision };
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
  let failing = false;

  // The store when it should be usable now, else undefined (decide locally).
  const usable = (): Store | undefined => {
    if (!js || !connected() || Date.now() < backoffUntil) return undefined;
    if (!store) {
      const client = js;
      binding ??= client.views
        .kv(RATE_LIMIT_BUCKET, {
          history: 1,
          ttl: BUCKET_TTL_MS,
          storage: StorageType.Memory,
        })
        .then(
          (kv) => {
            store = kvStore(kv);
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
    if (!failing)
      log.warn({ err: (err as Error).message }, "rate limits: NATS unreachable; limiting per replica");
    failing = true;
  };
  const succeeded = () => {
    if (failing) log.info("rate limits: shared through NATS again");
    failing = false;
  };

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
 * Fixed one-minute windows, counted locally and added to the shared totals on every sync.
 * Returns 0 when the call may go ahead, else the time left in the window.
 */
function createWindowCounters(
  storeNow: () => Store | undefined,
  failed: (err: unknown) => void,
  succeeded: () => void,
) {
  // shared: the total last read from the store (this replica's pushed counts included);
  // pending: admitted here and not pushed yet.
  const slots = new Map<string, { window: number; shared: number; pending: number }>();
  let syncing: Promise<void> | undefined;

  const push = async (
    store: Store,
    key: string,
    slot: { window: number; shared: number; pending: number },
  ) => {
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
    const now = Date.now();
    const window = Math.floor(now / WINDOW_MS);
    const store = storeNow();
    const work: Promise<void>[] = [];
    for (const [key, slot] of slots) {
      if (slot.window !== window) {
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
      if (!slot || slot.window !== window) {
        slot = { window, shared: 0, pending: 0 };
        slots.set(key, slot);
      }
      if (slot.shared + slot.pending >= perMinute) return (window + 1) * WINDOW_MS - now;
      slot.pending++;
      return 0;
    },
    sync(): Promise<void> {
      syncing ??= syncNow().finally(() => {
        syncing = undefined;
      });
      return syncing;
    },
  };
}
