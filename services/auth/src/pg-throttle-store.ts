import type { Pool } from "@protomesh/platform";
import { withTransaction } from "@protomesh/platform";

/** The limits of one throttle key. */
export interface ThrottleLimit {
  key: string;
  /** Failures before the back-off starts. */
  free: number;
  /** Failures at which the key is locked for lockoutS. */
  max: number;
}

/** Back-off and lock timing shared by every key. */
export interface ThrottleTiming {
  backoffBaseMs: number;
  backoffMaxMs: number;
  lockoutS: number;
}

/** Why an attempt was refused: which key, whether it is locked, and for how long. */
export interface Blocked {
  key: string;
  locked: boolean;
  retryMs: number;
}

class BlockedError extends Error {
  constructor(readonly blocked: Blocked) {
    super("blocked");
  }
}

/** Consecutive failed sign-ins per key, in PostgreSQL so that every replica shares them. */
export function createPgThrottleStore(pool: Pool, timing: ThrottleTiming) {
  const lockout = timing.lockoutS;
  return {
    /**
     * Counts one failure against every key, unless one of them is backing off or locked: then
     * nothing is counted and the first blocked key is returned. Counting before the password
     * is checked keeps concurrent guesses from slipping past the limit.
     */
    async attempt(limits: ThrottleLimit[]): Promise<Blocked | undefined> {
      try {
        await withTransaction(pool, async (tx) => {
          for (const { key, free, max } of limits) {
            // A count starts over after lockoutS without a failure (the "long cool-off").
            const { rows } = await tx.query(
              `INSERT INTO sign_in_failures AS t (key, failures, last_failure_at) VALUES ($1, 1, now())
               ON CONFLICT (key) DO UPDATE SET
                 failures = CASE WHEN t.last_failure_at < now() - make_interval(secs => $2) THEN 1 ELSE t.failures + 1 END,
                 last_failure_at = now()
               WHERE t.last_failure_at < now() - make_interval(secs => $2)
                  OR (t.failures < $4 AND (t.failures < $3
                      OR t.last_failure_at + make_interval(secs => LEAST($6::float8, $5::float8 * power(2, t.failures - $3)) / 1000) <= now()))
               RETURNING failures`,
              [key, lockout, free, max, timing.backoffBaseMs, timing.backoffMaxMs],
            );
            if (rows.length > 0) continue;
            const { rows: state } = await tx.query<{ failures: number; waited_ms: number }>(
              "SELECT failures, extract(epoch FROM now() - last_failure_at) * 1000 AS waited_ms FROM sign_in_failures WHERE key = $1",
              [key],
            );
            const s = state[0] ?? { failures: max, waited_ms: 0 };
            const locked = s.failures >= max;
            const waitMs = locked
              ? lockout * 1000
              : Math.min(timing.backoffMaxMs, timing.backoffBaseMs * 2 ** (s.failures - free));
            throw new BlockedError({ key, locked, retryMs: Math.max(0, waitMs - Number(s.waited_ms)) });
          }
        });
        return undefined;
      } catch (err) {
        if (err instanceof BlockedError) return err.blocked;
        throw err;
      }
    },

    /** Forgets a key's failures (a successful sign-in, a password reset). */
    async clear(key: string): Promise<void> {
      await pool.query("DELETE FROM sign_in_failures WHERE key = $1", [key]);
    },

    /** Takes back one counted attempt that turned out not to be a failure. */
    async takeBack(key: string): Promise<void> {
      await pool.query("UPDATE sign_in_failures SET failures = GREATEST(failures - 1, 0) WHERE key = $1", [
        key,
      ]);
    },
  };
}

export type ThrottleStore = ReturnType<typeof createPgThrottleStore>;
