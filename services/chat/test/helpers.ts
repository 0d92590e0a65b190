// What chat's tests share: a mesh with two chat replicas (A is the mesh's, B a second one on a
// port of its own), people signed in at auth over gRPC, typed chat clients bound to a person and
// a replica, and a reader of Subscribe streams.

import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { ChatService, type Message, type SubscribeResponse } from "@protomesh/contracts/chat/v1/chat_pb";
import { freePort } from "@protomesh/devkit";
import { createServiceClient, type RunningService, type ServiceClient } from "@protomesh/platform";
import {
  gatewayClient,
  type Mesh,
  type MeshOptions,
  nextWhere,
  query,
  signUpAndSignIn,
  startMesh,
  type TestAccount,
} from "@protomesh/testkit";

export type Chat = ServiceClient<typeof ChatService>;

/** A mesh for chat: auth, user, otp, notify and two chat replicas, no gateway. */
async function startChat(env: MeshOptions["env"] = {}): Promise<{
  mesh: Mesh;
  a: string;
  b: RunningService;
  addrB: string;
}> {
  const mesh = await startMesh({
    services: ["auth", "user", "otp", "notify", "chat"],
    gateway: false,
    env: { ...env, chat: { CHAT_HEARTBEAT_S: "1", CHAT_PRESENCE_TTL_S: "3", ...env.chat } },
  });
  try {
    const port = await freePort();
    const b = await mesh.start("chat", { env: { PORT: String(port) } });
    return { mesh, a: mesh.addr("chat"), b, addrB: `127.0.0.1:${port}` };
  } catch (err) {
    await mesh.stop();
    throw err;
  }
}

/** `count` people signed in at auth over gRPC, 8 at a time (auth queues 8 hashes per address). */
async function people(mesh: Mesh, count: number): Promise<TestAccount[]> {
  const auth = gatewayClient(AuthService, `http://${mesh.addr("auth")}`, "grpc");
  const all: TestAccount[] = [];
  while (all.length < count) {
    const batch = Math.min(8, count - all.length);
    all.push(...(await Promise.all(Array.from({ length: batch }, () => signUpAndSignIn(auth)))));
  }
  return all;
}

/** A chat client of one replica that calls as one person. */
export function chatAs(addr: string, who: TestAccount): Chat & { close(): void } {
  const client = createServiceClient(ChatService, addr);
  const bound: Record<string, unknown> = { close: () => client.close() };
  for (const [name, fn] of Object.entries(client)) {
    if (typeof fn !== "function" || name === "close" || name === "waitForReady") continue;
    bound[name] = (req: unknown, opts: object = {}) =>
      (fn as (r: unknown, o: object) => unknown)(req, { ...opts, accessToken: who.accessToken });
  }
  return bound as Chat & { close(): void };
}

/** An open Subscribe stream: its events in order, and a way to end it. */
export interface Stream {
  /** The next event that matches (by default any but a heartbeat); fails after timeoutMs. */
  next(
    what: string,
    match?: (e: SubscribeResponse) => boolean,
    timeoutMs?: number,
  ): Promise<SubscribeResponse>;
  close(): void;
}

/** Opens Subscribe and waits for its first heartbeat (the stream is live from then on). */
export async function subscribe(
  chat: Chat,
  afterSeq?: bigint,
): Promise<Stream & { first: SubscribeResponse[] }> {
  const stop = new AbortController();
  const it = chat.subscribe({ afterSeq }, { signal: stop.signal })[Symbol.asyncIterator]();
  const first: SubscribeResponse[] = [];
  const stream: Stream = {
    next: (what, match = (e) => e.event.case !== "heartbeat", timeoutMs = 10_000) =>
      nextWhere(it, match, timeoutMs, what),
    close: () => stop.abort(),
  };
  // The replay, up to the heartbeat that follows it.
  for (;;) {
    const e = await stream.next("the first heartbeat", () => true);
    if (e.event.case === "heartbeat") break;
    first.push(e);
  }
  return { ...stream, first };
}

/** Rows of chat's database (replica A's, which both replicas share). */
export const chatDb = <R extends Record<string, unknown>>(mesh: Mesh, sql: string, params: unknown[] = []) =>
  query<R>(mesh.env.chat.DATABASE_URL ?? "", sql, params);

/** A fresh client message id. */
export const newId = () => crypto.randomUUID();

/** The message an event carries, if it carries one. */
export const messageOf = (e: SubscribeResponse): Message | undefined =>
  e.event.case === "message" ? e.event.value : undefined;

/** A person of one test, with a client of each replica. */
export interface Person {
  who: TestAccount;
  a: Chat;
  b: Chat;
}

/**
 * What a test file shares: the mesh with chat replicas A and B, `count` people signed in, and
 * clients closed with the mesh.
 */
export async function chatFixture(env: MeshOptions["env"], count: number) {
  const { mesh, a: addrA, addrB } = await startChat(env);
  const clients: Array<{ close(): void }> = [];
  const stop = async () => {
    for (const c of clients) c.close();
    await mesh.stop();
  };
  let crowd: TestAccount[];
  try {
    crowd = await people(mesh, count);
  } catch (err) {
    await stop();
    throw err;
  }
  const client = (addr: string, who: TestAccount): Chat => {
    const c = chatAs(addr, who);
    clients.push(c);
    return c;
  };
  return {
    mesh,
    addrA,
    addrB,
    client,
    /** A person no other test uses. */
    next(): Person {
      const who = crowd.pop();
      if (!who) throw new Error(`more people needed: raise the count (${count})`);
      return { who, a: client(addrA, who), b: client(addrB, who) };
    },
    stop,
  };
}

export type ChatFixture = Awaited<ReturnType<typeof chatFixture>>;

/** Sends a text to a user with a fresh client message id. */
export async function send(from: Chat, to: TestAccount, text: string): Promise<Message> {
  const { message } = await from.sendMessage({
    to: { case: "recipientId", value: to.userId },
    text,
    clientMessageId: newId(),
  });
  if (!message) throw new Error("SendMessage answered no message");
  return message;
}
