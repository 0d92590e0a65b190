// Chat over real gRPC against two chat replicas: delivery across replicas, replay after a
// reconnect, idempotent sends, who sees what, bad input, blocks and account deletion.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { UserDeletedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import type { Message } from "@protomesh/contracts/chat/v1/chat_pb";
import { SubscribeResponseSchema } from "@protomesh/contracts/chat/v1/chat_pb";
import { assertCode, type Mesh, publishEvent, waitUntil } from "@protomesh/testkit";
import { type ChatFixture, chatDb, chatFixture, messageOf, newId, send, subscribe } from "./helpers.ts";

let chat: ChatFixture;
let mesh: Mesh;

before(async () => {
  // Heartbeats (and the replicas' look for missed events) slower than any wait here: delivery
  // must be live.
  chat = await chatFixture({ chat: { CHAT_HEARTBEAT_S: "60" } }, 30);
  mesh = chat.mesh;
});
after(() => chat?.stop());

const next = () => chat.next();

test("a subscriber on replica B receives a message sent through replica A, exactly once", async () => {
  const alice = next();
  const bob = next();
  const stream = await subscribe(alice.b);
  try {
    const sent = await send(bob.a, alice.who, "hello from A");
    const got = await stream.next("the message");
    assert.equal(messageOf(got)?.id, sent.id);
    assert.equal(messageOf(got)?.text, "hello from A");
    // The next event is the next message, with the next seq: the first came once.
    const second = await send(bob.a, alice.who, "second");
    const again = await stream.next("the second message");
    assert.equal(messageOf(again)?.id, second.id);
    assert.equal(again.seq, got.seq + 1n);
  } finally {
    stream.close();
  }
});

test("a reconnect with the last seq gets exactly the 20 messages sent while away, in order, then live ones", async () => {
  const alice = next();
  const bob = next();
  const first = await subscribe(alice.b);
  await send(bob.a, alice.who, "before");
  const seen = await first.next("the message before");
  first.close();
  const texts = Array.from({ length: 20 }, (_, i) => `away ${i}`);
  for (const t of texts) await send(bob.b, alice.who, t);
  const again = await subscribe(alice.a, seen.seq);
  try {
    assert.deepEqual(
      again.first.map((e) => (e.event.case === "message" ? e.event.value.text : e.event.case)),
      texts,
    );
    assert.deepEqual(
      again.first.map((e) => e.seq),
      texts.map((_, i) => seen.seq + 1n + BigInt(i)),
    );
    const live = await send(bob.b, alice.who, "live");
    const got = await again.next("the live message");
    assert.equal(messageOf(got)?.id, live.id);
    assert.equal(got.seq, seen.seq + 21n);
  } finally {
    again.close();
  }
});

test("a new user whose only heartbeat said seq 0 reconnects with 0 and misses nothing; without after_seq, only live", async () => {
  const alice = next();
  const bob = next();
  const first = await subscribe(alice.a);
  assert.deepEqual(first.first, [], "nothing to replay yet");
  first.close();
  const sent = await send(bob.b, alice.who, "while you were away");
  const again = await subscribe(alice.b, 0n);
  again.close();
  assert.deepEqual(
    again.first.map((e) => messageOf(e)?.id),
    [sent.id],
  );
  const live = await subscribe(alice.a);
  live.close();
  assert.deepEqual(live.first, [], "no after_seq: from now on");
});

test("the same client_message_id sent 3 times in parallel stores one message", async () => {
  const alice = next();
  const bob = next();
  const clientMessageId = newId();
  const request = {
    to: { case: "recipientId" as const, value: bob.who.userId },
    text: "once",
    clientMessageId,
  };
  const answers = await Promise.all([
    alice.a.sendMessage(request),
    alice.b.sendMessage(request),
    alice.a.sendMessage(request),
  ]);
  const ids = new Set(answers.map((r) => r.message?.id));
  assert.equal(ids.size, 1);
  const rows = await chatDb(mesh, "SELECT id FROM messages WHERE sender_id = $1", [alice.who.userId]);
  assert.equal(rows.length, 1);
  const conversations = await chatDb(mesh, "SELECT conversation_id FROM participants WHERE user_id = $1", [
    alice.who.userId,
  ]);
  assert.equal(conversations.length, 1, "one conversation per pair");
  // Events: one message in each person's log.
  const events = await chatDb(mesh, "SELECT seq FROM user_events WHERE user_id = $1", [bob.who.userId]);
  assert.equal(events.length, 1);
});

test("a conversation of others is NOT_FOUND to read, list, mark, write or page", async () => {
  const alice = next();
  const bob = next();
  const eve = next();
  const m = await send(alice.a, bob.who, "private");
  const conversationId = m.conversationId;
  await assertCode(eve.a.listMessages({ conversationId }), Code.NotFound, "ListMessages");
  await assertCode(eve.a.markRead({ conversationId, messageId: m.id }), Code.NotFound, "MarkRead");
  await assertCode(
    eve.a.sendMessage({
      to: { case: "conversationId", value: conversationId },
      text: "hi",
      clientMessageId: newId(),
    }),
    Code.NotFound,
    "SendMessage",
  );
  const { conversations } = await eve.a.listConversations({});
  assert.deepEqual(conversations, []);
  // The people in it do see it.
  const mine = await bob.b.listMessages({ conversationId });
  assert.deepEqual(
    mine.messages.map((x) => x.text),
    ["private"],
  );
});

test("bad input is INVALID_ARGUMENT and stores nothing", async () => {
  const alice = next();
  const bob = next();
  const carol = next();
  const to = { case: "recipientId" as const, value: bob.who.userId };
  for (const [what, text] of [
    ["empty text", ""],
    ["4001 characters", "x".repeat(4001)],
    ["a NUL character", "a\u0000b"],
  ] as const) {
    const err = await assertCode(
      alice.a.sendMessage({ to, text, clientMessageId: newId() }),
      Code.InvalidArgument,
      what,
    );
    assert.match(err.rawMessage, /text/);
  }
  await assertCode(
    alice.a.sendMessage({
      to: { case: "recipientId", value: alice.who.userId },
      text: "me",
      clientMessageId: newId(),
    }),
    Code.InvalidArgument,
    "to yourself",
  );
  assert.deepEqual(
    await chatDb(mesh, "SELECT id FROM messages WHERE sender_id = $1", [alice.who.userId]),
    [],
  );
  assert.deepEqual(
    await chatDb(mesh, "SELECT * FROM participants WHERE user_id = $1", [alice.who.userId]),
    [],
  );
  // 4000 characters (not bytes: these take 4 bytes each) are fine.
  const longest = await send(alice.a, bob.who, "😀".repeat(4000));
  assert.equal([...longest.text].length, 4000);
  // A page token of one conversation is refused for another.
  for (let i = 0; i < 3; i++) await send(alice.a, carol.who, `c${i}`);
  const withCarol = await alice.a.listConversations({});
  const carolsId = withCarol.conversations.find((c) => c.peerId === carol.who.userId)?.id ?? "";
  const page = await alice.a.listMessages({ conversationId: carolsId, pageSize: 1 });
  assert.ok(page.nextPageToken);
  await assertCode(
    alice.a.listMessages({ conversationId: longest.conversationId, pageToken: page.nextPageToken }),
    Code.InvalidArgument,
    "a cursor from another conversation",
  );
  // …and bob cannot use alice's token for the conversation they share either.
  await assertCode(
    bob.a.listMessages({ conversationId: carolsId, pageToken: page.nextPageToken }),
    Code.NotFound,
    "someone else's conversation",
  );
});

test("an unknown user is NOT_FOUND; a block is PERMISSION_DENIED for the blocked and FAILED_PRECONDITION for the blocker", async () => {
  const alice = next();
  const bob = next();
  await assertCode(
    alice.a.sendMessage({
      to: { case: "recipientId", value: crypto.randomUUID() },
      text: "hi",
      clientMessageId: newId(),
    }),
    Code.NotFound,
    "unknown user",
  );
  await bob.a.blockUser({ userId: alice.who.userId });
  await assertCode(
    alice.a.sendMessage({
      to: { case: "recipientId", value: bob.who.userId },
      text: "hi",
      clientMessageId: newId(),
    }),
    Code.PermissionDenied,
    "blocked",
  );
  await assertCode(
    bob.a.sendMessage({
      to: { case: "recipientId", value: alice.who.userId },
      text: "hi",
      clientMessageId: newId(),
    }),
    Code.FailedPrecondition,
    "blocker",
  );
  assert.deepEqual(
    await chatDb(mesh, "SELECT id FROM messages WHERE sender_id = ANY($1)", [
      [alice.who.userId, bob.who.userId],
    ]),
    [],
  );
  await bob.b.unblockUser({ userId: alice.who.userId });
  await send(alice.a, bob.who, "friends again");
});

test("conversations list the last message and unread count; MarkRead clears it and sends a receipt to both", async () => {
  const alice = next();
  const bob = next();
  const aliceStream = await subscribe(alice.a);
  try {
    await send(alice.a, bob.who, "one");
    const two = await send(alice.b, bob.who, "two");
    await send(bob.a, alice.who, "reply");
    const { conversations } = await bob.b.listConversations({});
    assert.equal(conversations.length, 1);
    assert.equal(conversations[0]?.unreadCount, 2);
    assert.equal(conversations[0]?.lastMessage?.text, "reply");
    assert.equal(conversations[0]?.peerId, alice.who.userId);
    await bob.b.markRead({ conversationId: two.conversationId, messageId: two.id });
    const after = await bob.a.listConversations({});
    assert.equal(after.conversations[0]?.unreadCount, 0);
    const receipt = await aliceStream.next("the read receipt", (e) => e.event.case === "read");
    assert.equal(receipt.event.case === "read" && receipt.event.value.messageId, two.id);
    assert.equal(receipt.event.case === "read" && receipt.event.value.readerId, bob.who.userId);
  } finally {
    aliceStream.close();
  }
});

test("a deleted account's messages go and its conversations disappear for it; nobody can write to it", async () => {
  const alice = next();
  const bob = next();
  await send(bob.a, alice.who, "from bob");
  const hers = await send(alice.a, bob.who, "from alice");
  await send(bob.b, alice.who, "again");
  await publishEvent(mesh.nats.url, UserDeletedSchema, { userId: alice.who.userId, email: alice.who.email });
  await waitUntil(
    async () =>
      (await chatDb(mesh, "SELECT 1 FROM deleted_users WHERE user_id = $1", [alice.who.userId])).length > 0,
    15_000,
    "the deletion handled",
  );
  assert.deepEqual((await alice.a.listConversations({})).conversations, []);
  await assertCode(
    alice.a.listMessages({ conversationId: hers.conversationId }),
    Code.NotFound,
    "her old conversation",
  );
  const bobs = await bob.a.listMessages({ conversationId: hers.conversationId });
  assert.deepEqual(
    bobs.messages.map((m) => m.text),
    ["again", "from bob"],
  );
  assert.equal((await bob.a.listConversations({})).conversations[0]?.peerId, "");
  // Her text is gone from his log too: a reconnect after his first event replays his second
  // message only, stepping over the seq hers had.
  const replay = await subscribe(bob.b, 1n);
  replay.close();
  assert.deepEqual(
    replay.first.map((e) => [messageOf(e)?.text, e.seq]),
    [["again", 3n]],
  );
  assert.deepEqual(
    await chatDb(mesh, "SELECT 1 FROM user_heads WHERE user_id = $1", [alice.who.userId]),
    [],
    "her log is gone",
  );
  await assertCode(
    bob.a.sendMessage({
      to: { case: "conversationId", value: hers.conversationId },
      text: "?",
      clientMessageId: newId(),
    }),
    Code.NotFound,
    "writing to a deleted account",
  );
});

test("ListMessages pages backwards from the newest, and its pages stay put while new messages arrive", async () => {
  const alice = next();
  const bob = next();
  let conversationId = "";
  for (let i = 1; i <= 5; i++) conversationId = (await send(alice.a, bob.who, `m${i}`)).conversationId;
  const texts = (r: { messages: Message[] }) => r.messages.map((m) => m.text);
  const first = await bob.a.listMessages({ conversationId, pageSize: 2 });
  assert.deepEqual(texts(first), ["m5", "m4"]);
  await send(alice.b, bob.who, "m6");
  const second = await bob.b.listMessages({ conversationId, pageSize: 2, pageToken: first.nextPageToken });
  assert.deepEqual(texts(second), ["m3", "m2"]);
  const third = await bob.a.listMessages({ conversationId, pageSize: 2, pageToken: second.nextPageToken });
  assert.deepEqual(texts(third), ["m1"]);
  assert.equal(third.nextPageToken, "");
});

test("Subscribe after a seq beyond the newest event is OUT_OF_RANGE", async () => {
  const alice = next();
  const stream = await subscribe(alice.a);
  stream.close();
  await assertCode(alice.b.subscribe({ afterSeq: 1_000n }), Code.OutOfRange, "after_seq beyond the head");
});

test("parallel sends in one conversation: each person's log has them in position order, and the list sorts by the newest", async () => {
  const alice = next();
  const bob = next();
  const first = await send(alice.a, bob.who, "first");
  const burst = await Promise.all(
    Array.from({ length: 60 }, (_, i) => {
      const [from, to] = i % 3 ? [alice, bob] : [bob, alice];
      return send(i % 2 ? from.a : from.b, to.who, `m${i}`);
    }),
  );
  const byPosition = await chatDb<{ id: string; position: string }>(
    mesh,
    "SELECT id, position::text AS position FROM messages WHERE conversation_id = $1 ORDER BY messages.position",
    [first.conversationId],
  );
  const positions = new Map(byPosition.map((r) => [r.id, BigInt(r.position)]));
  const newest = BigInt(byPosition.at(-1)?.position ?? 0);
  for (const person of [alice, bob]) {
    const logged = await chatDb<{ payload: Buffer }>(
      mesh,
      "SELECT payload FROM user_events WHERE user_id = $1 ORDER BY seq",
      [person.who.userId],
    );
    const order = logged.map((r) =>
      positions.get(messageOf(fromBinary(SubscribeResponseSchema, r.payload))?.id ?? ""),
    );
    assert.equal(order.length, 61);
    for (let i = 1; i < order.length; i++)
      assert.ok(
        (order[i - 1] ?? 0n) < (order[i] ?? 0n),
        `seq ${i + 1} of ${person.who.userId} goes back in position`,
      );
    const [side] = await chatDb<{ last: string }>(
      mesh,
      "SELECT last_position::text AS last FROM participants WHERE user_id = $1 AND conversation_id = $2",
      [person.who.userId, first.conversationId],
    );
    assert.equal(BigInt(side?.last ?? 0), newest, "the list sorts by the newest message");
  }
  // Bob reads up to a message of the middle: what alice sent after it is unread; an older mark changes nothing.
  const fromAlice = [first, ...burst.filter((m) => m.senderId === alice.who.userId)].sort((x, y) =>
    Number((positions.get(x.id) ?? 0n) - (positions.get(y.id) ?? 0n)),
  );
  const middle = fromAlice[20];
  assert.ok(middle);
  await bob.a.markRead({ conversationId: first.conversationId, messageId: middle.id });
  await bob.b.markRead({ conversationId: first.conversationId, messageId: first.id });
  const { conversations } = await bob.a.listConversations({});
  assert.equal(conversations[0]?.unreadCount, fromAlice.length - 21);
  assert.equal(conversations[0]?.lastMessage?.id, byPosition.at(-1)?.id);
});

test("a block racing a burst of sends: no message of the burst commits after BlockUser returned", async () => {
  const alice = next();
  const bob = next();
  const burst = Array.from({ length: 40 }, (_, i) => send(i % 2 ? alice.a : alice.b, bob.who, `m${i}`));
  await Promise.race(burst);
  await bob.a.blockUser({ userId: alice.who.userId });
  const count = async () =>
    (await chatDb(mesh, "SELECT 1 FROM messages WHERE sender_id = $1", [alice.who.userId])).length;
  const atBlock = await count();
  const answers = await Promise.allSettled(burst);
  assert.equal(await count(), atBlock, "messages committed after the block");
  assert.equal(answers.filter((a) => a.status === "fulfilled").length, atBlock);
  for (const a of answers)
    if (a.status === "rejected") assert.equal((a.reason as { code?: unknown }).code, Code.PermissionDenied);
  await assertCode(
    alice.b.sendMessage({
      to: { case: "recipientId", value: bob.who.userId },
      text: "hi",
      clientMessageId: newId(),
    }),
    Code.PermissionDenied,
    "a send right after the block",
  );
});

test("the unread count stops at 100", async () => {
  const alice = next();
  const bob = next();
  const first = await send(alice.a, bob.who, "first");
  // 150 more, written directly: only the count is checked.
  await chatDb(
    mesh,
    `INSERT INTO messages (id, conversation_id, sender_id, text, client_message_id)
     SELECT gen_random_uuid(), $1, $2, 'more', gen_random_uuid()::text FROM generate_series(1, 150)`,
    [first.conversationId, alice.who.userId],
  );
  assert.equal((await bob.a.listConversations({})).conversations[0]?.unreadCount, 100);
  await bob.a.markRead({ conversationId: first.conversationId, messageId: first.id });
  assert.equal((await bob.a.listConversations({})).conversations[0]?.unreadCount, 100);
  assert.equal((await alice.a.listConversations({})).conversations[0]?.unreadCount, 0);
});
