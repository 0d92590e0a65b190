// Presence over two (and a third, killed) chat replicas: a user is online while they have an
// open Subscribe on any replica, and a crashed replica's users go offline within the TTL. And
// what a lost live notice costs: a heartbeat's wait (1 s here), never the message.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { SubscribeResponseSchema } from "@protomesh/contracts/chat/v1/chat_pb";
import { freePort } from "@protomesh/devkit";
import { assertCode, type Mesh, type TestAccount, waitUntil } from "@protomesh/testkit";
import { connect } from "nats";
import { type Chat, type ChatFixture, chatDb, chatFixture, newId, subscribe } from "./helpers.ts";

const TTL_S = 3;
let chat: ChatFixture;
let mesh: Mesh;
let addrA: string;

before(async () => {
  chat = await chatFixture({ chat: { CHAT_PRESENCE_TTL_S: String(TTL_S) } }, 14);
  mesh = chat.mesh;
  addrA = chat.addrA;
});
after(() => chat?.stop());

const client = (addr: string, who: TestAccount): Chat => chat.client(addr, who);

/** Two people who have written to each other (presence is for contacts). */
async function pair(): Promise<[TestAccount, TestAccount]> {
  const [x, y] = [chat.next().who, chat.next().who];
  await client(addrA, x).sendMessage({
    to: { case: "recipientId", value: y.userId },
    text: "hi",
    clientMessageId: newId(),
  });
  return [x, y];
}

const isOnline = async (asker: Chat, userId: string) =>
  (await asker.getPresence({ userIds: [userId] })).presences[0]?.online ?? false;

test("a user is online while a Subscribe is open on any replica, and offline once the last one closes", async () => {
  const [alice, bob] = await pair();
  const bobAsks = client(addrA, bob);
  assert.equal(await isOnline(bobAsks, alice.userId), false);
  const onB = await subscribe(client(chat.addrB, alice));
  const onA = await subscribe(client(addrA, alice));
  assert.equal(await isOnline(bobAsks, alice.userId), true, "online with streams on B and A");
  onB.close();
  // Still online through A once B has let go of its key: B's close must not take A's with it.
  const nc = await connect({ servers: mesh.nats.url });
  try {
    const kv = await nc.jetstream().views.kv("chat_presence");
    const keys = async () => {
      let n = 0;
      for await (const _ of await kv.keys(`${alice.userId}.*`)) n++;
      return n;
    };
    await waitUntil(async () => (await keys()) === 1, 5_000, "replica B's presence key deleted");
  } finally {
    await nc.close();
  }
  assert.equal(await isOnline(bobAsks, alice.userId), true, "online through A after B's stream closed");
  onA.close();
  await waitUntil(
    async () => !(await isOnline(bobAsks, alice.userId)),
    2_000,
    "offline after the last close",
  );
});

test("strangers read as offline", async () => {
  const [alice] = await pair();
  const stranger = chat.next().who;
  const stream = await subscribe(client(addrA, alice));
  try {
    assert.equal(await isOnline(client(chat.addrB, stranger), alice.userId), false);
  } finally {
    stream.close();
  }
});

test("a replica killed with open streams: its users are offline within the presence TTL", async () => {
  const [alice, bob] = await pair();
  const port = await freePort();
  const doomed = await mesh.start("chat", { env: { PORT: String(port) } });
  const stream = await subscribe(client(`127.0.0.1:${port}`, alice));
  const bobAsks = client(addrA, bob);
  assert.equal(await isOnline(bobAsks, alice.userId), true);
  await doomed.kill();
  stream.close();
  // A crash deletes nothing: the claim lives on until it expires.
  assert.equal(await isOnline(bobAsks, alice.userId), true, "still online just after the crash");
  const killedAt = Date.now();
  await waitUntil(
    async () => !(await isOnline(bobAsks, alice.userId)),
    TTL_S * 1000 * 3,
    "offline after the TTL",
  );
  assert.ok(Date.now() - killedAt <= TTL_S * 1000 * 2, "within about the TTL");
});

test("a replica that stops gracefully takes its users offline at once, not after the TTL", async () => {
  const [alice, bob] = await pair();
  const port = await freePort();
  const leaving = await mesh.start("chat", { env: { PORT: String(port) } });
  const stream = await subscribe(client(`127.0.0.1:${port}`, alice));
  const bobAsks = client(addrA, bob);
  assert.equal(await isOnline(bobAsks, alice.userId), true);
  await leaving.stop();
  // The stream ended with UNAVAILABLE: the client reconnects (to another replica) with its seq.
  await assertCode(
    stream.next("the end", () => false),
    Code.Unavailable,
    "a stream of a stopping replica",
  );
  assert.equal(await isOnline(bobAsks, alice.userId), false);
});

test("an event whose live notice was lost reaches the subscriber from the log within a heartbeat", async () => {
  const [alice] = await pair();
  const stream = await subscribe(client(addrA, alice));
  try {
    // Committed to the log as SendMessage would, but no notice goes out (as if NATS lost it).
    const [head] = await chatDb<{ seq: string }>(
      mesh,
      `INSERT INTO user_heads (user_id, seq) VALUES ($1, 1)
       ON CONFLICT (user_id) DO UPDATE SET seq = user_heads.seq + 1 RETURNING seq::text AS seq`,
      [alice.userId],
    );
    const seq = BigInt(head?.seq ?? 0);
    const payload = toBinary(
      SubscribeResponseSchema,
      create(SubscribeResponseSchema, {
        seq,
        event: { case: "message", value: { id: newId(), text: "lost" } },
      }),
    );
    await chatDb(mesh, "INSERT INTO user_events (user_id, seq, payload) VALUES ($1, $2, $3)", [
      alice.userId,
      String(seq),
      Buffer.from(payload),
    ]);
    const got = await stream.next("the event", undefined, 5_000);
    assert.equal(got.seq, seq);
    assert.equal(got.event.case === "message" && got.event.value.text, "lost");
  } finally {
    stream.close();
  }
});

// Last: it restarts NATS under the whole fixture.
test("presence comes back after NATS restarts and loses its in-memory bucket", async (t) => {
  const [alice, bob] = await pair();
  // On B, asked through A: only the bucket can tell A that alice is online.
  const stream = await subscribe(client(chat.addrB, alice));
  t.after(() => stream.close());
  const bobAsks = client(addrA, bob);
  assert.equal(await isOnline(bobAsks, alice.userId), true);
  await mesh.nats.stop();
  await mesh.nats.restart();
  await waitUntil(() => isOnline(bobAsks, alice.userId), 15_000, "online again after the restart");
});
