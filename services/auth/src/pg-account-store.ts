import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { PasswordChangedSchema, UserDeletedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { addEvent, type Pool, withTransaction } from "@protomesh/platform";
import type { Account } from "./mfa.ts";
import { revokeAllSessions } from "./pg-auth-store.ts";

/** Account-level changes: password change and reset, deletion (lookups are in pg-auth-store). */
export function createPgAccountStore(pool: Pool) {
  return {
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
        await revokeAllSessions(tx, account.userId, "password changed", keepSessionId);
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
        await revokeAllSessions(tx, userId, "password reset");
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
        await revokeAllSessions(tx, userId, "account deleted");
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
