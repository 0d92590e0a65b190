import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  PasswordChangedSchema,
  SessionRevokedSchema,
  UserDeletedSchema,
} from "@protomesh/contracts/auth/v1/events_pb";
import { addEvent, MAX_ACCESS_TOKEN_TTL_MS, type Pool, type Tx, withTransaction } from "@protomesh/platform";
import type { Account } from "./mfa.ts";

/** Ends every live session of a user but one, each with SessionRevoked, inside tx. */
async function revokeUserSessions(tx: Tx, userId: string, reason: string, exceptSessionId?: string) {
  const { rows } = await tx.query<{ id: string }>(
    `UPDATE sessions SET revoked_at = now(), revoke_reason = $2
     WHERE user_id = $1 AND revoked_at IS NULL AND ($3::uuid IS NULL OR id <> $3::uuid) RETURNING id`,
    [userId, reason, exceptSessionId ?? null],
  );
  const now = new Date();
  for (const { id } of rows) {
    await addEvent(tx, SessionRevokedSchema, {
      sessionId: id,
      userId,
      reason,
      accessExpireTime: timestampFromDate(new Date(now.getTime() + MAX_ACCESS_TOKEN_TTL_MS)),
      occurTime: timestampFromDate(now),
    });
  }
}

/** Account-level changes: password change and reset, deletion. */
export function createPgAccountStore(pool: Pool) {
  return {
    /** The active account with this id. */
    async byId(userId: string): Promise<Account | undefined> {
      const { rows } = await pool.query<{
        user_id: string;
        email: string;
        password_hash: string;
        email_verified_at: Date | null;
      }>(
        "SELECT user_id, email, password_hash, email_verified_at FROM credentials WHERE user_id = $1 AND status = 'active'",
        [userId],
      );
      const r = rows[0];
      return (
        r && {
          userId: r.user_id,
          email: r.email,
          passwordHash: r.password_hash,
          emailVerified: r.email_verified_at !== null,
        }
      );
    },

    /** The id of the active account with this (normalised) email. */
    async idByEmail(email: string): Promise<string | undefined> {
      const { rows } = await pool.query<{ user_id: string }>(
        "SELECT user_id FROM credentials WHERE email = $1 AND status = 'active'",
        [email],
      );
      return rows[0]?.user_id;
    },

    /**
     * Replaces the password if it is still the one that was checked (a concurrent change wins
     * otherwise: false), ends every other session and emits PasswordChanged, in one transaction.
     */
    async changePassword(
      account: Pick<Account, "userId" | "email" | "passwordHash">,
      newHash: string,
      keepSessionId: string,
    ): Promise<boolean> {
      return withTransaction(pool, async (tx) => {
        const { rowCount } = await tx.query(
          "UPDATE credentials SET password_hash = $3, updated_at = now() WHERE user_id = $1 AND password_hash = $2",
          [account.userId, account.passwordHash, newHash],
        );
        if (rowCount !== 1) return false;
        await revokeUserSessions(tx, account.userId, "password changed", keepSessionId);
        await addEvent(tx, PasswordChangedSchema, {
          userId: account.userId,
          email: account.email,
          reset: false,
          occurTime: timestampFromDate(new Date()),
        });
        return true;
      });
    },

    /**
     * Sets a password after a reset code: the email is thereby verified, every session ends,
     * and PasswordChanged{reset} is emitted, in one transaction. Second factors stay as they are.
     */
    async resetPassword(userId: string, newHash: string): Promise<boolean> {
      return withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<{ email: string }>(
          `UPDATE credentials SET password_hash = $2, email_verified_at = coalesce(email_verified_at, now()),
             updated_at = now()
           WHERE user_id = $1 AND status = 'active' RETURNING email`,
          [userId, newHash],
        );
        const row = rows[0];
        if (!row) return false;
        await revokeUserSessions(tx, userId, "password reset");
        await addEvent(tx, PasswordChangedSchema, {
          userId,
          email: row.email,
          reset: true,
          occurTime: timestampFromDate(new Date()),
        });
        return true;
      });
    },

    /**
     * Deletes the account: its sessions are revoked first (SessionRevoked, so tokens die), then
     * the credentials row goes, and sessions, refresh tokens and MFA data with it (ON DELETE
     * CASCADE); UserDeleted tells the other services. One transaction.
     */
    async deleteAccount(userId: string): Promise<boolean> {
      return withTransaction(pool, async (tx) => {
        await revokeUserSessions(tx, userId, "account deleted");
        const { rows } = await tx.query<{ email: string }>(
          "DELETE FROM credentials WHERE user_id = $1 RETURNING email",
          [userId],
        );
        const row = rows[0];
        if (!row) return false;
        await addEvent(tx, UserDeletedSchema, {
          userId,
          email: row.email,
          occurTime: timestampFromDate(new Date()),
        });
        return true;
      });
    },
  };
}

export type AccountStore = ReturnType<typeof createPgAccountStore>;
