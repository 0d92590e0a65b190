// notify's emails about chat messages, over two chat replicas: only to an offline recipient,
// one per conversation per quiet period, never for a message read in the meantime.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type Mesh, mailsTo, query, waitUntil } from "@protomesh/testkit";
import { type ChatFixture, chatFixture, send, subscribe } from "./helpers.ts";

const SUBJECT = "New message from Test User";
let chat: ChatFixture;
let mesh: Mesh;

before(async () => {
  chat = await chatFixture({ notify: { CHAT_EMAIL_DELAY_MS: "2000", CHAT_EMAIL_QUIET_S: "600" } }, 8);
  mesh = chat.mesh;
});
after(() => chat?.stop());

const next = () => chat.next();

/** MessageSent events notify has decided about so far. */
const decided = async () =>
  Number(
    (
      await query<{ n: string }>(
        mesh.env.notify.DATABASE_URL ?? "",
        "SELECT count(*) AS n FROM processed_events WHERE consumer = 'notify-chat-message-emails'",
      )
    )[0]?.n,
  );

/** Runs action, then waits until notify has decided about `count` more messages. */
async function andDecided(count: number, action: () => Promise<unknown>) {
  const before = await decided();
  await action();
  await waitUntil(async () => (await decided()) >= before + count, 20_000, `${count} messages decided`);
}

test("an offline recipient gets exactly one email for a burst of messages", async () => {
  const alice = next();
  const bob = next();
  await andDecided(10, async () => {
    for (let i = 0; i < 10; i++) await send(i % 2 ? alice.a : alice.b, bob.who, `burst ${i}`);
  });
  assert.equal(mailsTo(mesh, bob.who.email, SUBJECT).length, 1);
});

test("an online recipient gets no email; once their stream closes, the next message emails them", async () => {
  const carol = next();
  const dave = next();
  const stream = await subscribe(carol.b);
  await andDecided(2, async () => {
    await send(dave.a, carol.who, "are you there?");
    await send(dave.b, carol.who, "still there?");
  });
  assert.equal(mailsTo(mesh, carol.who.email, SUBJECT).length, 0);
  stream.close();
  await waitUntil(
    async () => !(await dave.a.getPresence({ userIds: [carol.who.userId] })).presences[0]?.online,
    5_000,
    "carol offline",
  );
  await send(dave.a, carol.who, "gone?");
  await waitUntil(() => mailsTo(mesh, carol.who.email, SUBJECT).length === 1, 20_000, "the email");
});

test("a message read before notify decides sends no email", async () => {
  const erin = next();
  const frank = next();
  await andDecided(1, async () => {
    const message = await send(frank.a, erin.who, "read me quickly");
    await erin.b.markRead({ conversationId: message.conversationId, messageId: message.id });
  });
  assert.equal(mailsTo(mesh, erin.who.email, SUBJECT).length, 0);
});
