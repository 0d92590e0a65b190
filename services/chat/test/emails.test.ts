// notify's emails about chat messages, over two chat replicas: only to an offline recipient,
// one per conversation per quiet period, never for a message read in the meantime.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { UserDeletedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { type Mesh, mailsTo, publishEvent, query, waitUntil } from "@protomesh/testkit";
import { type ChatFixture, chatFixture, send, subscribe } from "./helpers.ts";

const SUBJECT = "New message from Test User";
let chat: ChatFixture;
let mesh: Mesh;

before(async () => {
  chat = await chatFixture({ notify: { CHAT_EMAIL_DELAY_MS: "2000", CHAT_EMAIL_QUIET_S: "600" } }, 9);
  mesh = chat.mesh;
});
after(() => chat?.stop());

const next = () => chat.next();

/** Rows of notify's database. */
const notifyDb = (sql: string, params: unknown[] = []) =>
  query(mesh.env.notify.DATABASE_URL ?? "", sql, params);

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

test("no email about a message whose sender or recipient deleted their account before notify decided", async () => {
  const gina = next();
  const hank = next();
  const ivan = next();
  const start = await decided();
  await send(gina.a, hank.who, "from a sender who leaves");
  await send(hank.b, ivan.who, "to a recipient who leaves");
  for (const gone of [gina.who, ivan.who])
    await publishEvent(mesh.nats.url, UserDeletedSchema, { userId: gone.userId, email: gone.email });
  const gone = [gina.who.userId, ivan.who.userId];
  await waitUntil(
    async () => (await notifyDb("SELECT 1 FROM deleted_users WHERE user_id = ANY($1)", [gone])).length === 2,
    10_000,
    "the deletions in notify",
  );
  assert.equal(await decided(), start, "notify decided before the deletions landed: nothing shown");
  await waitUntil(async () => (await decided()) >= start + 2, 20_000, "both messages decided");
  const chatMails = (to: string) =>
    mesh.smtp.messages.filter((m) => m.to.includes(to) && m.subject.startsWith("New message from"));
  assert.deepEqual([...chatMails(hank.who.email), ...chatMails(ivan.who.email)], []);
  assert.deepEqual(await notifyDb("SELECT 1 FROM chat_emails WHERE user_id = ANY($1)", [gone]), []);
});
