import { randomUUID } from "node:crypto";
import { NotificationAddedSchema } from "@protomesh/contracts/notify/v1/events_pb";
import { addEvent, type Pool, type Tx, withTransaction } from "@protomesh/platform";
import { toNotificationMessage } from "./convert.ts";

/** A sent notification, as the inbox shows it. */
export interface NotificationRecord {
  id: string;
  channel: "email" | "sms";
  kind: string;
  subject: string;
  createdAt: Date;
}

/** Where a page of the inbox starts: the last row of the previous page. */
export interface InboxCursor {
  createdAt: Date;
  id: string;
}

/** The inbox in PostgreSQL. */
export function createPgNotificationStore(pool: Pool) {
  return {
    /**
     * Records a notification and emits NotificationAdded inside the caller's transaction.
     * Undefined, writing nothing, when the user's account was deleted.
     */
    async add(
      tx: Tx,
      n: { userId: string; channel: "email" | "sms"; kind: string; subject: string; eventId: string },
    ): Promise<NotificationRecord | undefined> {
      // Shared among writes for the user, exclusive with deleteUser's: a row either commits
      // before the deletion (which then removes it) or is written after it and sees the tombstone.
      await tx.query("SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", [n.userId]);
      const id = randomUUID();
      const { rows } = await tx.query<{ created_at: Date }>(
        `INSERT INTO notifications (id, user_id, channel, kind, subject, event_id)
         SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE user_id = $2)
         RETURNING created_at`,
        [id, n.userId, n.channel, n.kind, n.subject, n.eventId],
      );
      const createdAt = rows[0]?.created_at;
      if (!createdAt) return undefined;
      const record: NotificationRecord = {
        id,
        channel: n.channel,
        kind: n.kind,
        subject: n.subject,
        createdAt,
      };
      await addEvent(tx, NotificationAddedSchema, {
        userId: n.userId,
        notification: toNotificationMessage(record),
      });
      return record;
    },

    /**
     * Records a notification and runs `send` in one transaction: a failed send leaves no row,
     * a committed row means it went out. Undefined, sending nothing, for a deleted user.
     */
    async addAndSend(
      n: { userId: string; channel: "email" | "sms"; kind: string; subject: string; eventId: string },
      send: () => Promise<void>,
    ): Promise<NotificationRecord | undefined> {
      return withTransaction(pool, async (tx) => {
        const record = await this.add(tx, n);
        if (record) await send();
        return record;
      });
    },

    /** Forgets a deleted user: every inbox row, keeping only the id so later writes skip them. */
    async deleteUser(tx: Tx, userId: string): Promise<number> {
      await tx.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [userId]);
      await tx.query("INSERT INTO deleted_users (user_id) VALUES ($1) ON CONFLICT DO NOTHING", [userId]);
      const { rowCount } = await tx.query("DELETE FROM notifications WHERE user_id = $1", [userId]);
      await tx.query("DELETE FROM chat_reads WHERE user_id = $1", [userId]);
      await tx.query("DELETE FROM chat_emails WHERE user_id = $1", [userId]);
      return rowCount ?? 0;
    },

    /** Records how far a person read a conversation (marks only move forward). */
    async chatRead(tx: Tx, r: { userId: string; conversationId: string; position: bigint }): Promise<void> {
      await tx.query(
        `INSERT INTO chat_reads (user_id, conversation_id, position) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, conversation_id) DO UPDATE SET position = GREATEST(chat_reads.position, $3)`,
        [r.userId, r.conversationId, String(r.position)],
      );
    },

    /** Whether the person read the conversation up to this position. */
    async chatIsRead(
      tx: Tx,
      r: { userId: string; conversationId: string; position: bigint },
    ): Promise<boolean> {
      const { rowCount } = await tx.query(
        "SELECT 1 FROM chat_reads WHERE user_id = $1 AND conversation_id = $2 AND position >= $3",
        [r.userId, r.conversationId, String(r.position)],
      );
      return (rowCount ?? 0) > 0;
    },

    /**
     * Claims the conversation's email for the person: false when one went out within the quiet
     * period, or when the person or the sender deleted their account (no row is written for a
     * deleted person: the lock orders the claim and deleteUser, as in add()). The row lock makes
     * racing claims (two replicas) take turns; the claim is undone with the transaction if the
     * send fails.
     */
    async claimChatEmail(
      tx: Tx,
      c: { userId: string; senderId: string; conversationId: string; quietS: number },
    ): Promise<boolean> {
      await tx.query("SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", [c.userId]);
      const { rowCount } = await tx.query(
        `INSERT INTO chat_emails (user_id, conversation_id, sent_at)
         SELECT $1, $2, now() WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE user_id IN ($1, $4))
         ON CONFLICT (user_id, conversation_id) DO UPDATE SET sent_at = now()
           WHERE chat_emails.sent_at < now() - make_interval(secs => $3)`,
        [c.userId, c.conversationId, c.quietS, c.senderId],
      );
      return (rowCount ?? 0) > 0;
    },

    /** Newest first; fetches one extra row to know whether another page follows. */
    async list(
      userId: string,
      limit: number,
      after?: InboxCursor,
    ): Promise<{ items: NotificationRecord[]; more: boolean }> {
      const { rows } = await pool.query<{
        id: string;
        channel: "email" | "sms";
        kind: string;
        subject: string;
        created_at: Date;
      }>(
        `SELECT id, channel, kind, subject, created_at FROM notifications
         WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
         ORDER BY created_at DESC, id DESC LIMIT $4`,
        [userId, after?.createdAt ?? null, after?.id ?? null, limit + 1],
      );
      const items = rows.slice(0, limit).map((r) => ({
        id: r.id,
        channel: r.channel,
        kind: r.kind,
        subject: r.subject,
        createdAt: r.created_at,
      }));
      return { items, more: rows.length > limit };
    },
  };
}

export type NotificationStore = ReturnType<typeof createPgNotificationStore>;
