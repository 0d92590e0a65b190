import { Code, ConnectError, metrics } from "@protomesh/platform";
import { Piscina } from "piscina";
import { Counter } from "prom-client";
import type { PasswordTask } from "./password-worker.ts";

const hashes = new Counter({
  name: "auth_password_hashes_total",
  help: "bcrypt jobs by outcome: run, or skipped because their caller had given up.",
  labelNames: ["outcome"],
  registers: [metrics],
});

/** Who a hash is for: a queue bound applies to each key (a client address, an account). */
export interface HashOptions {
  signal?: AbortSignal;
  keys?: string[];
}

const BUSY = "too many sign-in attempts right now; try again shortly";
// Nobody reads this answer (the caller is gone); it only keeps the logs free of a bogus INTERNAL.
const gaveUp = () => new ConnectError("the caller gave up", Code.Canceled);

interface Job {
  task: PasswordTask;
  keys: string[];
  signal: AbortSignal | undefined;
  resolve(value: unknown): void;
  reject(err: unknown): void;
  onAbort?: () => void;
}

/**
 * bcrypt in worker threads. Jobs wait in a queue here, not in piscina's, and go to a thread only
 * when one is free: a job whose caller gave up (deadline passed, call cancelled) while it
 * waited is dropped without ever running. The queue is bounded overall and per key, so one
 * client address or one account cannot fill it for everyone.
 */
export function createPasswordHasher(opts: {
  cost: number;
  threads: number;
  maxQueue?: number;
  maxPerKey?: number;
}) {
  const pool = new Piscina({
    filename: new URL("./password-worker.ts", import.meta.url).href,
    minThreads: opts.threads,
    maxThreads: opts.threads,
    idleTimeout: Number.POSITIVE_INFINITY,
  });
  const maxQueue = opts.maxQueue ?? 256;
  const maxPerKey = opts.maxPerKey ?? 8;
  const queue: Job[] = [];
  // Jobs queued or running per key.
  const perKey = new Map<string, number>();
  let running = 0;

  const release = (job: Job) => {
    for (const key of job.keys) {
      const n = (perKey.get(key) ?? 1) - 1;
      if (n <= 0) perKey.delete(key);
      else perKey.set(key, n);
    }
    if (job.onAbort) job.signal?.removeEventListener("abort", job.onAbort);
  };

  const pump = () => {
    while (running < opts.threads && queue.length > 0) {
      const job = queue.shift() as Job;
      if (job.signal?.aborted) {
        hashes.inc({ outcome: "skipped" });
        release(job);
        job.reject(gaveUp());
        continue;
      }
      running++;
      hashes.inc({ outcome: "run" });
      pool
        .run(job.task)
        .then(
          (value) => job.resolve(value),
          (err) => job.reject(err),
        )
        .finally(() => {
          running--;
          release(job);
          pump();
        });
    }
  };

  const run = <T>(task: PasswordTask, o: HashOptions = {}): Promise<T> => {
    const keys = o.keys ?? [];
    if (o.signal?.aborted) {
      hashes.inc({ outcome: "skipped" });
      return Promise.reject(gaveUp());
    }
    if (queue.length >= maxQueue || keys.some((k) => (perKey.get(k) ?? 0) >= maxPerKey)) {
      return Promise.reject(new ConnectError(BUSY, Code.ResourceExhausted));
    }
    return new Promise<T>((resolve, reject) => {
      const job: Job = { task, keys, signal: o.signal, resolve: resolve as (v: unknown) => void, reject };
      for (const key of keys) perKey.set(key, (perKey.get(key) ?? 0) + 1);
      if (o.signal) {
        // Leave the queue at once, so the slot is free for the next caller.
        job.onAbort = () => {
          const i = queue.indexOf(job);
          if (i < 0) return;
          queue.splice(i, 1);
          hashes.inc({ outcome: "skipped" });
          release(job);
          reject(gaveUp());
        };
        o.signal.addEventListener("abort", job.onAbort, { once: true });
      }
      queue.push(job);
      pump();
    });
  };

  // Compared against when the email is unknown, so that case costs the same time as a wrong password.
  const dummy = run<string>({ op: "hash", password: "not-a-real-password", cost: opts.cost });
  // A replica stopped before its first unknown-email sign-in ends the pool under this hash:
  // that is not an error anyone waits for (a verify after close fails on its own).
  dummy.catch(() => {});
  return {
    /** Hashes a password (already checked by the policy and NFC-normalised). */
    hash: (password: string, o?: HashOptions) => run<string>({ op: "hash", password, cost: opts.cost }, o),
    /** Verifies against the hash, or against a dummy of equal cost when there is none. */
    verify: async (password: string, hash: string | undefined, o?: HashOptions) => {
      const ok = await run<boolean>({ op: "verify", password, hash: hash ?? (await dummy) }, o);
      return ok && hash !== undefined;
    },
    close: () => pool.destroy(),
  };
}

export type PasswordHasher = ReturnType<typeof createPasswordHasher>;
