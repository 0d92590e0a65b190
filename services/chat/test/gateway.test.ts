// Chat through the gateway, in front of both replicas (an `ipv4:` list, as a Kubernetes Service
// resolves to several pods): delivery across replicas over every protocol, bad input from
// Connect JSON, and streams that end when a replica stops.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { ChatService } from "@protomesh/contracts/chat/v1/chat_pb";
import { freePort } from "@protomesh/devkit";
import type { RunningGateway } from "@protomesh/gateway";
import { assertCode, gatewayClient, type Protocol, type TestAccount } from "@protomesh/testkit";
import {
  type Chat,
  type ChatFixture,
  chatDb,
  chatFixture,
  messageOf,
  newId,
  send,
  subscribe,
} from "./helpers.ts";

let chat: ChatFixture;
let gateway: RunningGateway;

before(async () => {
  // Heartbeats slower than any wait here: delivery must be live.
  chat = await chatFixture({ chat: { CHAT_HEARTBEAT_S: "60" } }, 12);
  gateway = await chat.mesh.startGateway({ CHAT_ADDR: `ipv4:${chat.addrA},${chat.addrB}` });
});
after(() => chat?.stop());

/** A chat client through the gateway that calls as one person. */
const via = (protocol: Protocol, who: TestAccount, url = gateway.url) =>
  gatewayClient(ChatService, url, protocol, () => who.accessToken) as unknown as Chat;

for (const protocol of ["connect-json", "grpc-web", "grpc"] as const) {
  test(`${protocol}: a subscriber through the gateway gets messages sent through either replica, once each`, async () => {
    const alice = chat.next();
    const bob = chat.next();
    const stream = await subscribe(via(protocol, alice.who));
    try {
      // Whichever replica the gateway opened the stream on, one of these crossed replicas.
      const sent = [
        await send(bob.a, alice.who, "through A 👋"),
        await send(bob.b, alice.who, "through B ü"),
        await send(via(protocol, bob.who), alice.who, "through the gateway 中文"),
      ];
      let seq = 0n;
      for (const m of sent) {
        const got = await stream.next(`"${m.text}"`);
        assert.equal(messageOf(got)?.id, m.id);
        assert.equal(messageOf(got)?.text, m.text);
        if (seq > 0n) assert.equal(got.seq, seq + 1n, "no event twice, none skipped");
        seq = got.seq;
      }
    } finally {
      stream.close();
    }
  });
}

test("Connect JSON: empty, too long or invalid UTF-8 text is INVALID_ARGUMENT and stores nothing", async () => {
  const alice = chat.next();
  const bob = chat.next();
  const bobChat = via("connect-json", bob.who);
  const to = { case: "recipientId", value: alice.who.userId } as const;
  await assertCode(bobChat.sendMessage({ to, text: "", clientMessageId: newId() }), Code.InvalidArgument);
  await assertCode(
    bobChat.sendMessage({ to, text: "x".repeat(4001), clientMessageId: newId() }),
    Code.InvalidArgument,
  );
  // Bytes no client library would send: the raw request, with 0xFF 0xFE inside the text.
  const body = Buffer.concat([
    Buffer.from(`{"recipientId":"${alice.who.userId}","clientMessageId":"${newId()}","text":"hi `),
    Buffer.from([0xff, 0xfe]),
    Buffer.from('"}'),
  ]);
  const res = await fetch(`${gateway.url}/${ChatService.typeName}/SendMessage`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${bob.who.accessToken}` },
    body,
  });
  assert.equal(res.status, 400);
  assert.equal(((await res.json()) as { code: string }).code, "invalid_argument");
  const rows = await chatDb(chat.mesh, "SELECT 1 FROM messages WHERE sender_id = $1", [bob.who.userId]);
  assert.equal(rows.length, 0);
});

test("a stream through the gateway ends with UNAVAILABLE when its replica stops", async () => {
  const alice = chat.next();
  const bob = chat.next();
  // A gateway of its own in front of a replica of its own, stopped here.
  const port = await freePort();
  const replica = await chat.mesh.start("chat", { env: { PORT: String(port) } });
  const solo = await chat.mesh.startGateway({ CHAT_ADDR: `127.0.0.1:${port}` });
  const stream = await subscribe(via("grpc-web", alice.who, solo.url));
  try {
    await send(bob.a, alice.who, "still here");
    await stream.next("the message before the stop");
    await replica.stop();
    const err = await stream
      .next("the end", () => true)
      .then(
        (e) => assert.fail(`expected the stream to end, got ${e.event.case}`),
        (e: unknown) => e as { code?: Code },
      );
    assert.equal(err.code, Code.Unavailable);
  } finally {
    stream.close();
  }
});
