import { randomUUID } from "node:crypto";
import { MessageSentSchema, MessagesReadSchema } from "@protomesh/contracts/chat/v1/events_pb";
import {
  addEvent,
  type Cursor,
  type Page,
  type Pool,
  type Tx,
  toPage,
  withTransaction,
} from "@protomesh/platform";
import {
  type ConversationRecord,
  encodeEvent,
  type MessageRecord,
  type ReadRecord,
  toMessageSent,
  toMessagesRead,
} from "./convert.ts";

/**
 * Unread counts stop here ("99+" in a client): a page of conversations costs at most this many
 * index entries each, however long someone stayed away.
 */
const UNREAD_CAP = 100;

/** The statements whose plans test/plans.test.ts checks, kept in one place so it checks these. */
export const SQL = {
  touchConversation: `UPDATE participants SET last_position = GREATEST(last_position, $2)
    WHERE user_id = ANY($3::uuid[]) AND conversation_id = $1`,
  listConversations: `SELECT p.conversation_id AS id, p.peer_id, p.last_position::text AS sort_key,
      (SELECT count(*)::int FROM (SELECT 1 FROM messages x WHERE x.conversation_id = p.conversation_id
         AND x.position > p.read_position AND x.sender_id <> p.user_id LIMIT ${UNREAD_CAP}) u) AS unread,
      m.id AS m_id, m.position::text AS position, m.sender_id, m.text, m.client_message_id, m.created_at,
      p.conversation_id
    FROM participants p
    LEFT JOIN LATERAL (SELECT * FROM messages WHERE conversation_id = p.conversation_id
      ORDER BY position DESC LIMIT 1) m ON true
    WHERE p.user_id = $1 AND ($2::bigint IS NULL OR (p.last_position, p.conversation_id) < ($2, $3::uuid))
    ORDER BY p.last_position DESC, p.conversation_id DESC LIMIT $4`,
  deletedsMessagesInLogs:
    "DELETE FROM user_events WHERE message_id IN (SELECT id FROM messages WHERE sender_id = $1)",
  peersForget: `UPDATE participants p SET peer_id = NULL FROM participants mine
    WHERE mine.user_id = $1 AND p.user_id = mine.peer_id AND p.conversation_id = mine.conversation_id`,
  orphanConversations: `DELETE FROM conversations c USING participants mine
    WHERE mine.user_id = $1 AND mine.peer_id IS NULL AND c.id = mine.conversation_id`,
  deleteBlocks: "DELETE FROM blocks WHERE blocker_id = $1 OR blocked_id = $1",
};

/** One user's event, committed, for the live feed. */
export interface UserEvent {
  userId: string;
  seq: bigint;
  payload: Uint8Array;
}

/** What SendMessage's transaction did. */
export type Sent =
  | { kind: "sent"; message: MessageRecord; events: UserEvent[] }
  /** The sender's client_message_id was stored before: that message, unchanged. */
  | { kind: "repeat"; message: MessageRecord }
  /** The sender's client_message_id belongs to another message: nothing was stored. */
  | { kind: "reused" }
  | { kind: "deleted" }
  /** One of the two blocked the other (decided under the locks that order it against block()). */
  | { kind: "blocked"; byPeer: boolean };

interface MessageRow {
  id: string;
  conversation_id: string;
  position: string;
  sender_id: string;
  text: string;
  client_message_id: string;
  created_at: Date;
}

const MESSAGE_COLUMNS =
  "id, conversation_id, position::text AS position, sender_id, text, client_message_id, created_at";

const toMessageRecord = (r: MessageRow): MessageRecord => ({
  id: r.id,
  conversationId: r.conversation_id,
  position: BigInt(r.position),
  senderId: r.sender_id,
  text: r.text,
  clientMessageId: r.client_message_id,
  createdAt: r.created_at,
});

/**
 * Takes the write locks of a change about these people and says which of them are deleted:
 * first a lock shared with other writes and exclusive with deleteUser's (so a change either
 * commits before an account's deletion, which then removes it, or sees the tombstone), then the
 * log heads of those still here, in id order (two transactions for the same people never
 * deadlock). Holding both people's heads until commit serialises everything about their
 * conversation: a message's position is taken under them, so positions, seqs and commits come
 * in one order, and a block decided under them orders it against every send. A deleted user's
 * head is not recreated.
 */
async function lockPeople(tx: Tx, userIds: string[]): Promise<Set<string>> {
  const people = [...new Set(userIds)].sort();
  await tx.query({
    name: "chat-lock-people",
    text: "SELECT pg_advisory_xact_lock_shared(hashtextextended(u, 0)) FROM unnest($1::text[]) u ORDER BY u",
    values: [people],
  });
  const gone = await tx.query<{ user_id: string }>({
    name: "chat-deleted",
    text: "SELECT user_id FROM deleted_users WHERE user_id = ANY($1::uuid[])",
    values: [people],
  });
  const deleted = new Set(gone.rows.map((r) => r.user_id));
  await tx.query({
    name: "chat-lock-heads",
    text: `INSERT INTO user_heads (user_id, seq) SELECT u, 0 FROM unnest($1::uuid[]) u ORDER BY u
       ON CONFLICT (user_id) DO UPDATE SET seq = user_heads.seq`,
    values: [people.filter((u) => !deleted.has(u))],
  });
  return deleted;
}

/**
 * Appends an event to each user's log with the next seq of that user, whose head the
 * transaction holds (lockPeople): a user's seqs commit in order, so a reader that has seen seq
 * n never later finds a new n-1.
 */
async function appendEvents(
  tx: Tx,
  userIds: string[],
  event: MessageRecord | ReadRecord,
): Promise<UserEvent[]> {
  const { rows } = await tx.query<{ user_id: string; seq: string }>({
    name: "chat-next-seqs",
    text: `INSERT INTO user_heads (user_id, seq) SELECT u, 1 FROM unnest($1::uuid[]) u ORDER BY u
       ON CONFLICT (user_id) DO UPDATE SET seq = user_heads.seq + 1 RETURNING user_id, seq::text AS seq`,
    values: [[...userIds].sort()],
  });
  const events = rows.map((r) => ({
    userId: r.user_id,
    seq: BigInt(r.seq),
    payload: encodeEvent(BigInt(r.seq), event),
  }));
  await tx.query({
    name: "chat-log-events",
    text: `INSERT INTO user_events (user_id, seq, payload, message_id)
       SELECT u, s, p, $4 FROM unnest($1::uuid[], $2::bigint[], $3::bytea[]) AS e (u, s, p)`,
    values: [
      events.map((e) => e.userId),
      events.map((e) => String(e.seq)),
      events.map((e) => Buffer.from(e.payload)),
      "text" in event ? event.id : null,
    ],
  });
  return events;
}

/** Conversations, messages, read marks, blocks and each user's event log in PostgreSQL. */
export function createPgChatStore(pool: Pool) {
  return {
    /** The caller's side of a conversation; undefined when they are not in it. */
    async participant(userId: string, conversationId: string): Promise<{ peerId: string } | undefined> {
      const { rows } = await pool.query<{ peer_id: string | null }>({
        name: "chat-participant",
        text: "SELECT peer_id FROM participants WHERE user_id = $1 AND conversation_id = $2",
        values: [userId, conversationId],
      });
      const row = rows[0];
      return row && { peerId: row.peer_id ?? "" };
    },

    /** The conversation between two people, if they have one. */
    async conversationWith(userId: string, peerId: string): Promise<string | undefined> {
      const { rows } = await pool.query<{ conversation_id: string }>({
        name: "chat-conversation-with",
        text: "SELECT conversation_id FROM participants WHERE user_id = $1 AND peer_id = $2",
        values: [userId, peerId],
      });
      return rows[0]?.conversation_id;
    },

    /** Whether the account was deleted. */
    async isDeleted(userId: string): Promise<boolean> {
      const { rowCount } = await pool.query("SELECT 1 FROM deleted_users WHERE user_id = $1", [userId]);
      return (rowCount ?? 0) > 0;
    },

    /** Those of the users who share a conversation with the caller and have not blocked them. */
    async contacts(userId: string, candidates: string[]): Promise<string[]> {
      const { rows } = await pool.query<{ peer_id: string }>(
        `SELECT p.peer_id FROM participants p
         WHERE p.user_id = $1 AND p.peer_id = ANY($2::uuid[])
           AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = p.peer_id AND b.blocked_id = $1)`,
        [userId, candidates],
      );
      return rows.map((r) => r.peer_id);
    },

    /**
     * Stores a message (making the conversation when `conversationId` is not given), logs it for
     * both people, and writes MessageSent, in one transaction. A repeated client_message_id
     * of the sender returns the stored message: the unique index decides, also between racing
     * calls (the second waits for the first to commit and then finds its row).
     */
    async send(s: {
      senderId: string;
      recipientId: string;
      conversationId: string | undefined;
      text: string;
      clientMessageId: string;
      recipientOnline: boolean;
    }): Promise<Sent> {
      return withTransaction(pool, async (tx): Promise<Sent> => {
        const people = [s.senderId, s.recipientId];
        if ((await lockPeople(tx, people)).size > 0) return { kind: "deleted" };
        const blocked = await tx.query<{ blocker_id: string }>({
          name: "chat-blocks",
          text: `SELECT blocker_id FROM blocks
           WHERE (blocker_id = $1 AND blocked_id = $2) OR (blocker_id = $2 AND blocked_id = $1)`,
          values: people,
        });
        if (blocked.rows.length > 0)
          return { kind: "blocked", byPeer: blocked.rows.some((r) => r.blocker_id === s.recipientId) };
        const conversationId = s.conversationId ?? (await openConversation(tx, s.senderId, s.recipientId));
        const id = randomUUID();
        const { rows } = await tx.query<{ position: string; created_at: Date }>({
          name: "chat-insert-message",
          text: `INSERT INTO messages (id, conversation_id, sender_id, text, client_message_id)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sender_id, client_message_id) DO NOTHING
           RETURNING position::text AS position, created_at`,
          values: [id, conversationId, s.senderId, s.text, s.clientMessageId],
        });
        const inserted = rows[0];
        if (!inserted) {
          const existing = await tx.query<MessageRow>(
            `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE sender_id = $1 AND client_message_id = $2`,
            [s.senderId, s.clientMessageId],
          );
          const row = existing.rows[0];
          if (!row) throw new Error("a message's client id matched a row that vanished");
          // Another message under the same id: nothing of this call stays (not even a new conversation).
          if (row.conversation_id !== conversationId || row.text !== s.text) throw new ClientIdReused();
          return { kind: "repeat", message: toMessageRecord(row) };
        }
        const message: MessageRecord = {
          id,
          conversationId,
          position: BigInt(inserted.position),
          senderId: s.senderId,
          text: s.text,
          clientMessageId: s.clientMessageId,
          createdAt: inserted.created_at,
        };
        const events = await appendEvents(tx, people, message);
        await tx.query({
          name: "chat-touch-conversation",
          text: SQL.touchConversation,
          values: [conversationId, inserted.position, people],
        });
        await addEvent(tx, MessageSentSchema, toMessageSent(message, s.recipientId, s.recipientOnline));
        return { kind: "sent" as const, message, events };
      }).catch((err: unknown): Sent => {
        if (err instanceof ClientIdReused) return { kind: "reused" };
        throw err;
      });
    },

    /**
     * Moves the reader's mark up to a message of the conversation and logs a receipt for both
     * people. "no message" when it is not in the conversation (or the reader's account is gone);
     * no events when the mark was already there or beyond. Decided under the people's locks, so
     * a racing MarkRead waits and an account deletion comes wholly before or after: a deleted
     * peer gets no receipt and no new log head.
     */
    async markRead(
      readerId: string,
      conversationId: string,
      messageId: string,
    ): Promise<{ kind: "no message" } | { kind: "read"; events: UserEvent[] }> {
      return withTransaction(pool, async (tx) => {
        const side = await tx.query<{ peer_id: string | null }>({
          name: "chat-participant",
          text: "SELECT peer_id FROM participants WHERE user_id = $1 AND conversation_id = $2",
          values: [readerId, conversationId],
        });
        const peerId = side.rows[0]?.peer_id;
        const deleted = await lockPeople(tx, peerId ? [readerId, peerId] : [readerId]);
        if (deleted.has(readerId)) return { kind: "no message" as const };
        // Read again under the locks: the peer may have gone meanwhile (peer_id is then NULL).
        const { rows } = await tx.query<{ position: string; read_position: string; peer_id: string | null }>({
          name: "chat-read-target",
          text: `SELECT m.position::text AS position, p.read_position::text AS read_position, p.peer_id
           FROM messages m JOIN participants p ON p.conversation_id = m.conversation_id AND p.user_id = $1
           WHERE m.id = $3 AND m.conversation_id = $2`,
          values: [readerId, conversationId, messageId],
        });
        const target = rows[0];
        if (!target) return { kind: "no message" as const };
        if (BigInt(target.position) <= BigInt(target.read_position))
          return { kind: "read" as const, events: [] };
        const read: ReadRecord = {
          conversationId,
          readerId,
          messageId,
          position: BigInt(target.position),
          readAt: new Date(),
        };
        const people =
          target.peer_id && !deleted.has(target.peer_id) ? [readerId, target.peer_id] : [readerId];
        const events = await appendEvents(tx, people, read);
        await tx.query(
          "UPDATE participants SET read_position = $3 WHERE user_id = $1 AND conversation_id = $2",
          [readerId, conversationId, target.position],
        );
        await addEvent(tx, MessagesReadSchema, toMessagesRead(read));
        return { kind: "read" as const, events };
      });
    },

    /** The caller's conversations, most recent first, with the last message and unread count. */
    async listConversations(
      userId: string,
      limit: number,
      after?: Cursor,
    ): Promise<Page<ConversationRecord>> {
      const { rows } = await pool.query<
        MessageRow & {
          sort_key: string;
          id: string;
          peer_id: string | null;
          unread: number;
          m_id: string | null;
        }
      >(SQL.listConversations, [userId, after?.key ?? null, after?.id ?? null, limit + 1]);
      return toPage(rows, limit, (r) => ({
        id: r.id,
        peerId: r.peer_id ?? "",
        unread: r.unread,
        lastMessage: r.m_id ? toMessageRecord({ ...r, id: r.m_id }) : undefined,
      }));
    },

    /** A conversation's messages, newest first, older than the cursor. */
    async listMessages(conversationId: string, limit: number, after?: Cursor): Promise<Page<MessageRecord>> {
      const { rows } = await pool.query<MessageRow & { sort_key: string }>(
        `SELECT ${MESSAGE_COLUMNS}, position::text AS sort_key FROM messages
         WHERE conversation_id = $1 AND ($2::bigint IS NULL OR position < $2)
         ORDER BY messages.position DESC LIMIT $3`,
        [conversationId, after?.key ?? null, limit + 1],
      );
      return toPage(rows, limit, toMessageRecord);
    },

    /**
     * Under both people's locks, as send() takes them: a message either commits before the block
     * or sees it, so none is delivered once BlockUser returned.
     */
    async block(blockerId: string, blockedId: string): Promise<void> {
      await withTransaction(pool, async (tx) => {
        if ((await lockPeople(tx, [blockerId, blockedId])).size > 0) return;
        await tx.query("INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", [
          blockerId,
          blockedId,
        ]);
      });
    },

    async unblock(blockerId: string, blockedId: string): Promise<void> {
      await pool.query("DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2", [
        blockerId,
        blockedId,
      ]);
    },

    /** Up to `limit` of a user's events after a seq, in order. */
    async eventsAfter(userId: string, afterSeq: bigint, limit: number): Promise<UserEvent[]> {
      const { rows } = await pool.query<{ seq: string; payload: Buffer }>({
        name: "chat-events-after",
        text: "SELECT seq::text AS seq, payload FROM user_events WHERE user_id = $1 AND seq > $2 ORDER BY user_events.seq LIMIT $3",
        values: [userId, String(afterSeq), limit],
      });
      return rows.map((r) => ({ userId, seq: BigInt(r.seq), payload: r.payload }));
    },

    /** The newest seq of each of the users that has one. */
    async heads(userIds: string[]): Promise<Array<{ userId: string; seq: bigint }>> {
      const { rows } = await pool.query<{ user_id: string; seq: string }>(
        "SELECT user_id, seq::text AS seq FROM user_heads WHERE user_id = ANY($1::uuid[])",
        [userIds],
      );
      return rows.map((r) => ({ userId: r.user_id, seq: BigInt(r.seq) }));
    },

    /** A user's newest seq (0 before any event) and the oldest one still kept. */
    async history(userId: string): Promise<{ head: bigint; oldest: bigint }> {
      const { rows } = await pool.query<{ head: string | null; oldest: string | null }>({
        name: "chat-history",
        text: `SELECT (SELECT seq::text FROM user_heads WHERE user_id = $1) AS head,
           (SELECT min(seq)::text FROM user_events WHERE user_id = $1) AS oldest`,
        values: [userId],
      });
      const head = BigInt(rows[0]?.head ?? 0);
      return { head, oldest: rows[0]?.oldest ? BigInt(rows[0].oldest) : head + 1n };
    },

    /**
     * Forgets a deleted account: its messages are deleted (not anonymised), its side of every
     * conversation goes, its peers see an empty peer id, and a tombstone (the id only) refuses
     * anything sent to or by it later.
     */
    async deleteUser(tx: Tx, userId: string): Promise<void> {
      await tx.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [userId]);
      // Its log head before its peers' rows, as a MarkRead takes them: no deadlock with one.
      await tx.query("SELECT 1 FROM user_heads WHERE user_id = $1 FOR UPDATE", [userId]);
      await tx.query("INSERT INTO deleted_users (user_id) VALUES ($1) ON CONFLICT DO NOTHING", [userId]);
      // Its messages also leave its peers' logs, text and all. That leaves gaps in their seqs:
      // Subscribe's replay reads `seq > last` in order and its gap fill reads up to a notice's
      // seq, so both step over a missing seq; a reconnect from before a gap at the very start
      // of a log may be told to reload (the oldest kept seq moved up), which is also correct.
      await tx.query(SQL.deletedsMessagesInLogs, [userId]);
      await tx.query("DELETE FROM messages WHERE sender_id = $1", [userId]);
      // Through its own sides, so that every statement reaches its rows by a key.
      await tx.query(SQL.peersForget, [userId]);
      // A conversation whose other side went before has nobody left (the cascade takes the rest).
      await tx.query(SQL.orphanConversations, [userId]);
      await tx.query("DELETE FROM participants WHERE user_id = $1", [userId]);
      await tx.query(SQL.deleteBlocks, [userId]);
      await tx.query("DELETE FROM user_events WHERE user_id = $1", [userId]);
      await tx.query("DELETE FROM user_heads WHERE user_id = $1", [userId]);
    },

    /** Deletes events older than the retention, a batch at a time; returns how many went. */
    async pruneEvents(olderThanDays: number, batch = 5_000): Promise<number> {
      const { rowCount } = await pool.query(
        `DELETE FROM user_events WHERE ctid = ANY(ARRAY(SELECT ctid FROM user_events
           WHERE created_at < now() - make_interval(days => $1) LIMIT $2))`,
        [olderThanDays, batch],
      );
      return rowCount ?? 0;
    },
  };
}

/** A client_message_id already used for another message. */
class ClientIdReused extends Error {}

/** The conversation of two people, made (with both sides) when it is the first message. */
async function openConversation(tx: Tx, a: string, b: string): Promise<string> {
  const [low, high] = a < b ? [a, b] : [b, a];
  await tx.query({
    name: "chat-open-conversation",
    text: "INSERT INTO conversations (id, user_a, user_b) VALUES ($1, $2, $3) ON CONFLICT (user_a, user_b) DO NOTHING",
    values: [randomUUID(), low, high],
  });
  // A statement of its own: it sees the row a racing first message committed meanwhile.
  const { rows } = await tx.query<{ id: string }>({
    name: "chat-find-conversation",
    text: "SELECT id FROM conversations WHERE user_a = $1 AND user_b = $2",
    values: [low, high],
  });
  const id = rows[0]?.id;
  if (!id) throw new Error("a conversation could not be opened");
  await tx.query({
    name: "chat-open-sides",
    text: `INSERT INTO participants (user_id, conversation_id, peer_id) VALUES ($1, $3, $2), ($2, $3, $1)
       ON CONFLICT DO NOTHING`,
    values: [a, b, id],
  });
  return id;
}

export type ChatStore = ReturnType<typeof createPgChatStore>;
