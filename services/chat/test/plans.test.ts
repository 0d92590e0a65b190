// The plans of chat's key queries on a few thousand rows: each reaches its rows through an
// index (no sequential scan of participants, conversations, blocks, messages or user_events) and the list needs no
// sort. The SQL is the store's own (its SQL table); the plans, not timings, are what is checked.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { SQL } from "../src/pg-chat-store.ts";
import { type ChatFixture, chatDb, chatFixture } from "./helpers.ts";

let chat: ChatFixture;
before(async () => {
  chat = await chatFixture({}, 0);
});
after(() => chat?.stop());

const q = (sql: string, params: unknown[] = []) => chatDb<Record<string, unknown>>(chat.mesh, sql, params);
const plan = async (sql: string, params: unknown[]) =>
  (await q(`EXPLAIN (COSTS OFF) ${sql}`, params)).map((r) => r["QUERY PLAN"]).join("\n");

test("chat's writes, its list and an account's deletion use indexes", async () => {
  // 4,000 people, 3,000 conversations (two sides each), a message each, 1,000 blocks.
  await q(`INSERT INTO conversations (id, user_a, user_b)
    SELECT gen_random_uuid(), LEAST(x, y), GREATEST(x, y) FROM (
      SELECT ('00000000-0000-0000-0000-' || lpad(((i * 7) % 4000)::text, 12, '0'))::uuid x,
             ('00000000-0000-0000-0001-' || lpad(((i * 13) % 4000)::text, 12, '0'))::uuid y
      FROM generate_series(1, 3000) i) s`);
  await q(`INSERT INTO participants (user_id, conversation_id, peer_id, last_position)
    SELECT user_a, id, user_b, 1 FROM conversations UNION ALL SELECT user_b, id, user_a, 1 FROM conversations`);
  await q(`INSERT INTO messages (id, conversation_id, sender_id, text, client_message_id)
    SELECT gen_random_uuid(), id, user_a, 'hi', gen_random_uuid()::text FROM conversations`);
  await q(`INSERT INTO blocks (blocker_id, blocked_id)
    SELECT user_a, user_b FROM conversations LIMIT 1000`);
  await q(`INSERT INTO user_events (user_id, seq, payload, message_id)
    SELECT p.user_id, row_number() OVER (PARTITION BY p.user_id ORDER BY m.id), '\\x00', m.id
    FROM messages m JOIN participants p ON p.conversation_id = m.conversation_id`);
  await q("ANALYZE");
  const [c] = await q("SELECT id, user_a, user_b FROM conversations LIMIT 1");
  const plans = {
    touch: await plan(SQL.touchConversation, [c?.id, 2, [c?.user_a, c?.user_b]]),
    // What PostgreSQL runs for the cascade from conversations.
    "the cascade's look-up": await plan("SELECT 1 FROM participants WHERE conversation_id = $1", [c?.id]),
    "peers forget the deleted": await plan(SQL.peersForget, [c?.user_a]),
    "orphan conversations": await plan(SQL.orphanConversations, [c?.user_a]),
    "the deleted's messages in their peers' logs": await plan(SQL.deletedsMessagesInLogs, [c?.user_a]),
    blocks: await plan(SQL.deleteBlocks, [c?.user_b]),
    "the list from a cursor": await plan(SQL.listConversations, [c?.user_a, 5, c?.id, 21]),
  };
  for (const [name, text] of Object.entries(plans)) {
    console.log(`== ${name}\n${text}`);
    assert.doesNotMatch(text, /Seq Scan on (participants|conversations|blocks|user_events|messages)/, name);
  }
  assert.doesNotMatch(plans["the list from a cursor"], /Sort/, "the list is read in index order");
});
