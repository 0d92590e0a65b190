import { createHash, randomBytes } from "node:crypto";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { MfaMethod } from "@protomesh/contracts/auth/v1/auth_pb";
import { MfaChangedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { addEvent, type Pool, withTransaction } from "@protomesh/platform";

/** A second factor that can be turned on. */
export type FactorMethod = "email" | "totp";

/** A factor of an account, on or only enrolling. */
export interface Factor {
  method: FactorMethod;
  enabled: boolean;
  /** TOTP: the sealed secret. */
  secretEnc: Buffer | undefined;
}

/** What ConfirmMfa found. */
export type ConfirmOutcome = "enabled" | "first" | "not-started";

/** Codes tried on one challenge before it dies. */
export const CHALLENGE_ATTEMPTS = 5;
/** Wrong second-factor codes per user and window, across challenges and step-up checks. */
export const USER_CODE_BUDGET = 20;
const BUDGET_WINDOW_S = 3600;

const hashToken = (token: string) => createHash("sha256").update(token).digest();
const METHOD_ENUM: Record<FactorMethod, MfaMethod> = {
  email: MfaMethod.EMAIL,
  totp: MfaMethod.TOTP,
};

/** Second factors, recovery codes and sign-in challenges in PostgreSQL. */
export function createPgMfaStore(pool: Pool) {
  return {
    async factors(userId: string): Promise<Factor[]> {
      const { rows } = await pool.query<{
        method: FactorMethod;
        enabled_at: Date | null;
        secret_enc: Buffer | null;
      }>("SELECT method, enabled_at, secret_enc FROM mfa_factors WHERE user_id = $1 ORDER BY method", [
        userId,
      ]);
      return rows.map((r) => ({
        method: r.method,
        enabled: r.enabled_at !== null,
        secretEnc: r.secret_enc ?? undefined,
      }));
    },

    /**
     * Starts (or restarts, with a new secret) an enrolment; false when the method is already on,
     * so an enabled factor is never replaced without confirming it.
     */
    async startEnrolment(userId: string, method: FactorMethod, secretEnc?: Buffer): Promise<boolean> {
      const { rowCount } = await pool.query(
        `INSERT INTO mfa_factors (user_id, method, secret_enc) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, method) DO UPDATE
           SET secret_enc = EXCLUDED.secret_enc, last_step = NULL, created_at = now()
           WHERE mfa_factors.enabled_at IS NULL`,
        [userId, method, secretEnc ?? null],
      );
      return rowCount === 1;
    },

    /**
     * Turns an enrolling factor on and emits MfaChanged. When it is the account's first factor,
     * the given recovery-code hashes replace any old ones and the outcome is "first".
     */
    async confirm(
      userId: string,
      email: string,
      method: FactorMethod,
      recoveryHashes: Buffer[],
    ): Promise<ConfirmOutcome> {
      return withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<{ others: number }>(
          `UPDATE mfa_factors f SET enabled_at = now()
           WHERE user_id = $1 AND method = $2 AND enabled_at IS NULL
           RETURNING (SELECT count(*)::int FROM mfa_factors o
                      WHERE o.user_id = f.user_id AND o.method <> f.method AND o.enabled_at IS NOT NULL) AS others`,
          [userId, method],
        );
        const row = rows[0];
        if (!row) return "not-started";
        const first = row.others === 0;
        if (first) {
          await tx.query("DELETE FROM mfa_recovery_codes WHERE user_id = $1", [userId]);
          await tx.query(
            "INSERT INTO mfa_recovery_codes (user_id, code_hash) SELECT $1, unnest($2::bytea[])",
            [userId, recoveryHashes],
          );
        }
        await addEvent(tx, MfaChangedSchema, {
          userId,
          email,
          method: METHOD_ENUM[method],
          enabled: true,
          occurTime: timestampFromDate(new Date()),
        });
        return first ? "first" : "enabled";
      });
    },

    /** Turns a factor off and emits MfaChanged; the last one takes the recovery codes with it. */
    async disable(userId: string, email: string, method: FactorMethod): Promise<boolean> {
      return withTransaction(pool, async (tx) => {
        const { rowCount } = await tx.query(
          "DELETE FROM mfa_factors WHERE user_id = $1 AND method = $2 AND enabled_at IS NOT NULL",
          [userId, method],
        );
        if (rowCount !== 1) return false;
        const { rows } = await tx.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM mfa_factors WHERE user_id = $1 AND enabled_at IS NOT NULL",
          [userId],
        );
        if (rows[0]?.n === 0) {
          await tx.query("DELETE FROM mfa_recovery_codes WHERE user_id = $1", [userId]);
          await tx.query("DELETE FROM mfa_factors WHERE user_id = $1", [userId]);
        }
        await addEvent(tx, MfaChangedSchema, {
          userId,
          email,
          method: METHOD_ENUM[method],
          enabled: false,
          occurTime: timestampFromDate(new Date()),
        });
        return true;
      });
    },

    /** Accepts a TOTP time step once: false when it, or a later one, was already used. */
    async useTotpStep(userId: string, step: number): Promise<boolean> {
      const { rowCount } = await pool.query(
        `UPDATE mfa_factors SET last_step = $2
         WHERE user_id = $1 AND method = 'totp' AND (last_step IS NULL OR last_step < $2)`,
        [userId, step],
      );
      return rowCount === 1;
    },

    /** Uses up a recovery code; false when it is not one of the user's unused codes. */
    async useRecoveryCode(userId: string, codeHash: Buffer): Promise<boolean> {
      const { rowCount } = await pool.query(
        "UPDATE mfa_recovery_codes SET used_at = now() WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
        [userId, codeHash],
      );
      return rowCount === 1;
    },

    /** Unused recovery codes, for tests and a future "codes left" display. */
    async recoveryCodesLeft(userId: string): Promise<number> {
      const { rows } = await pool.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        [userId],
      );
      return rows[0]?.n ?? 0;
    },

    /** A new single-use challenge for a user whose password was right. */
    async createChallenge(userId: string, ttlMs: number) {
      const token = randomBytes(32).toString("base64url");
      const expiresAt = new Date(Date.now() + ttlMs);
      // Expired challenges are swept here, a few at a time, instead of by a timer.
      await pool.query(
        `DELETE FROM mfa_challenges WHERE token_hash IN
           (SELECT token_hash FROM mfa_challenges WHERE expires_at < now() LIMIT 100)`,
      );
      await pool.query("INSERT INTO mfa_challenges (token_hash, user_id, expires_at) VALUES ($1, $2, $3)", [
        hashToken(token),
        userId,
        expiresAt,
      ]);
      return { token, expiresAt };
    },

    /**
     * Takes one try on a live challenge before the code is checked, so that parallel guesses
     * never exceed the limit; returns the user, or undefined for an unknown, expired or spent one.
     */
    async attemptChallenge(token: string): Promise<string | undefined> {
      const { rows } = await pool.query<{ user_id: string }>(
        `UPDATE mfa_challenges SET attempts = attempts + 1
         WHERE token_hash = $1 AND expires_at > now() AND attempts < $2 RETURNING user_id`,
        [hashToken(token), CHALLENGE_ATTEMPTS],
      );
      return rows[0]?.user_id;
    },

    /** Uses the challenge up; exactly one caller gets true. */
    async consumeChallenge(token: string): Promise<boolean> {
      const { rowCount } = await pool.query("DELETE FROM mfa_challenges WHERE token_hash = $1", [
        hashToken(token),
      ]);
      return rowCount === 1;
    },

    /**
     * Takes one code try from the user's budget before the code is checked; returns undefined
     * when allowed, else the milliseconds until the budget refills.
     */
    async takeCodeTry(userId: string): Promise<number | undefined> {
      const { rows } = await pool.query<{ failures: number; window_start: Date }>(
        `INSERT INTO mfa_failures AS f (user_id, failures, window_start) VALUES ($1, 1, now())
         ON CONFLICT (user_id) DO UPDATE SET
           failures = CASE WHEN f.window_start < now() - make_interval(secs => $2) THEN 1 ELSE f.failures + 1 END,
           window_start = CASE WHEN f.window_start < now() - make_interval(secs => $2) THEN now() ELSE f.window_start END
         RETURNING failures, window_start`,
        [userId, BUDGET_WINDOW_S],
      );
      const row = rows[0];
      if (!row || row.failures <= USER_CODE_BUDGET) return undefined;
      return Math.max(1000, row.window_start.getTime() + BUDGET_WINDOW_S * 1000 - Date.now());
    },

    /** A right code ends the run of wrong ones: the budget counts consecutive failures. */
    async clearCodeTries(userId: string): Promise<void> {
      await pool.query("DELETE FROM mfa_failures WHERE user_id = $1", [userId]);
    },
  };
}

export type MfaStore = ReturnType<typeof createPgMfaStore>;
