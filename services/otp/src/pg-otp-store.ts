import type { MessageInitShape } from "@bufbuild/protobuf";
import { OtpIssuedSchema } from "@protomesh/contracts/otp/v1/events_pb";
import { addEvent, type Pool, type Tx, withTransaction } from "@protomesh/platform";

/** The code a subject may currently verify for a purpose. */
export interface CodeRecord {
  id: string;
  /** HMAC-SHA256 of subject, purpose and code under OTP_HASH_KEY. */
  hash: Buffer;
  attempts: number;
  expiresAt: Date;
}

/** How many events fall within a window, and when the oldest and newest of them happened. */
export interface WindowCount {
  count: number;
  oldest: Date | undefined;
  newest: Date | undefined;
}

/** The operations on one subject and purpose, made while holding its lock (see `withKey`). */
export interface KeySession {
  /** The database's clock when the lock was taken: every time of this session is measured on it. */
  now: Date;
  /** Codes issued since `since`. */
  issuesSince(since: Date): Promise<WindowCount>;
  /** Wrong tries since `since`, across codes. */
  failuresSince(since: Date): Promise<WindowCount>;
  code(): Promise<CodeRecord | undefined>;
  /** Stores a new code in place of any other, records the issue, and writes its event to the outbox. */
  replaceCode(code: CodeRecord, event: MessageInitShape<typeof OtpIssuedSchema>): Promise<void>;
  /** A right code is used up. */
  deleteCode(id: string): Promise<void>;
  /** Counts a wrong try against the code and the subject's budget; returns the code's attempts. */
  recordFailure(id: string): Promise<number>;
}

interface CodeRow {
  id: string;
  code_hash: Buffer;
  attempts: number;
  expires_at: Date;
}

interface CountRow {
  count: number;
  oldest: Date | null;
  newest: Date | null;
}

const toCount = (r: CountRow | undefined): WindowCount => ({
  count: r?.count ?? 0,
  oldest: r?.oldest ?? undefined,
  newest: r?.newest ?? undefined,
});

function session(tx: Tx, subject: string, purpose: number, now: Date): KeySession {
  const key = [subject, purpose];
  const count = async (table: "otp_issues" | "otp_failures", column: string, since: Date) => {
    const { rows } = await tx.query<CountRow>(
      `SELECT count(*)::int AS count, min(${column}) AS oldest, max(${column}) AS newest
         FROM ${table} WHERE subject = $1 AND purpose = $2 AND ${column} > $3`,
      [...key, since],
    );
    return toCount(rows[0]);
  };
  return {
    now,
    issuesSince: (since) => count("otp_issues", "issued_at", since),
    failuresSince: (since) => count("otp_failures", "failed_at", since),

    async code() {
      const { rows } = await tx.query<CodeRow>(
        "SELECT id, code_hash, attempts, expires_at FROM otp_codes WHERE subject = $1 AND purpose = $2",
        key,
      );
      const r = rows[0];
      return r && { id: r.id, hash: r.code_hash, attempts: r.attempts, expiresAt: r.expires_at };
    },

    async replaceCode(code, event) {
      await tx.query(
        `INSERT INTO otp_codes (subject, purpose, id, code_hash, attempts, created_at, expires_at)
         VALUES ($1, $2, $3, $4, 0, $5, $6)
         ON CONFLICT (subject, purpose) DO UPDATE SET id = $3, code_hash = $4, attempts = 0,
           created_at = $5, expires_at = $6`,
        [...key, code.id, code.hash, now, code.expiresAt],
      );
      await tx.query("INSERT INTO otp_issues (subject, purpose, issued_at) VALUES ($1, $2, $3)", [
        ...key,
        now,
      ]);
      await addEvent(tx, OtpIssuedSchema, event);
    },

    async deleteCode(id) {
      await tx.query("DELETE FROM otp_codes WHERE id = $1", [id]);
    },

    async recordFailure(id) {
      await tx.query("INSERT INTO otp_failures (subject, purpose, failed_at) VALUES ($1, $2, $3)", [
        ...key,
        now,
      ]);
      const { rows } = await tx.query<{ attempts: number }>(
        "UPDATE otp_codes SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts",
        [id],
      );
      return rows[0]?.attempts ?? 0;
    },
  };
}

/** Codes, issues and wrong tries in PostgreSQL. */
export function createPgOtpStore(pool: Pool) {
  return {
    /**
     * Runs fn in one transaction holding a lock on (subject, purpose), so checks and counts
     * for one key never interleave: of 50 concurrent tries each sees the attempts of those
     * before it, and two concurrent issues cannot both pass the cooldown.
     */
    withKey<T>(subject: string, purpose: number, fn: (s: KeySession) => Promise<T>): Promise<T> {
      return withTransaction(pool, async (tx) => {
        await tx.query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2::text, 0))", [
          subject,
          purpose,
        ]);
        // clock_timestamp, not now(): now() is when the transaction began, before the wait.
        const { rows } = await tx.query<{ now: Date }>("SELECT clock_timestamp() AS now");
        return fn(session(tx, subject, purpose, rows[0]?.now ?? new Date()));
      });
    },

    /**
     * Deletes codes that expired and counts that left their windows; returns how many rows
     * went. Safe on every replica at once.
     */
    async cleanup(windows: { issuesS: number; failuresS: number }): Promise<number> {
      const codes = await pool.query("DELETE FROM otp_codes WHERE expires_at < now()");
      const issues = await pool.query(
        "DELETE FROM otp_issues WHERE issued_at < now() - make_interval(secs => $1)",
        [windows.issuesS],
      );
      const failures = await pool.query(
        "DELETE FROM otp_failures WHERE failed_at < now() - make_interval(secs => $1)",
        [windows.failuresS],
      );
      return (codes.rowCount ?? 0) + (issues.rowCount ?? 0) + (failures.rowCount ?? 0);
    },
  };
}

export type OtpStore = ReturnType<typeof createPgOtpStore>;
