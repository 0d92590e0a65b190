// Chat at scale (issue 9): thousands of Subscribe streams, one user each, held through one
// gateway on one chat replica: what each stream costs the gateway and chat in memory, and how
// long a message takes from SendMessage's commit to its subscriber when every user gets one.
// Against the same streams on a bare grpc-js server that writes one pre-encoded message to each;
// then, at rest, SendMessage on one chat replica to a subscriber on another.
//
// Users: signing up hashes a password (about 15 a second here), so the users are made the way
// auth's sign-up ends instead: CreateUser at user (an internal call, with mesh credentials), and
// an access token signed with auth's own key ring over auth's database, with the key, issuer,
// audience and lifetime the run gave auth. The gateway and chat verify these against auth's
// real JWKS. No session row backs them: nothing checks one, only the list of revoked sessions.

import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { fromBinary } from "@bufbuild/protobuf";
import { ChatService, SubscribeResponseSchema } from "@protomesh/contracts/chat/v1/chat_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  createLogger,
  createMeshCredentials,
  createPool,
  createServiceClient,
  type ServiceClient,
} from "@protomesh/platform";
import { readAuthConfig } from "../../services/auth/src/config.ts";
import { createKeyRing, open, seal } from "../../services/auth/src/key-ring.ts";
import { createPgAuthStore } from "../../services/auth/src/pg-auth-store.ts";
import {
  callsEnded,
  type GrpcStreams,
  heapOf,
  kibPerStream,
  openGrpcStreams,
  quantileOf,
  rssOf,
  type ServiceProcess,
  type StreamsRun,
  untilCallsEnded,
} from "./grpc-streams.ts";
import { cpuOf } from "./native-load.ts";
import type { StartedProcess } from "./procs.ts";

/** What the chat part needs from the run that started the mesh; `streams` are one user's each. */
export interface ChatBenchContext extends StreamsRun {
  /** The chat replica the gateway routes to. */
  chat: ServiceProcess;
  userAddr: string;
  /** The environment the run gave auth (its database, key encryption key, token settings). */
  authEnv: Record<string, string>;
  /** Starts another chat replica on the same database and NATS; the part stops it. */
  startChatReplica(): Promise<StartedProcess>;
  /** Starts a bench server (`bench/servers/…`); the part stops it. */
  startServer(entry: string, env: Record<string, string>): Promise<StartedProcess>;
  runId: string;
  /** Sequential messages across replicas at rest. */
  crossMessages: number;
}

const SUBSCRIBE = `/${ChatService.typeName}/${ChatService.method.subscribe.name}`;
// CreateUser calls in flight while the users are made.
const USER_LANES = 16;
const USERS_MS = 300_000;
// Senders of the burst, each with one SendMessage in flight: one sender per lane, so no send
// waits on another's lock of the same sender's event log.
const SENDERS = 32;
const SEND_MS = 300_000;
// Streams open this many at a time, the next wave once the last is live (or after the wait):
// a storm of all of them at once is another test.
const WAVE = 500;
const WAVE_WAIT_MS = 30_000;
// Waits, each bounded: every stream live; the last messages after the last send; the bare burst.
const LIVE_WAIT_MS = 180_000;
const DELIVERY_WAIT_MS = 15_000;
const CLOSE_WAIT_MS = 30_000;
const CROSS_MS = 60_000;
const CROSS_WAIT_MS = 5_000;
// Issue 9's targets.
const TARGET_STREAMS = 10_000;
const TARGET_P99_MS = 200;
const TARGET_BARE_RATIO = 2;
const TARGET_GATEWAY_HEAP_KIB = 16;

interface Person {
  id: string;
  token: string;
}

/** Per stream: the messages (not heartbeats) it got, and how long they took. */
interface Inbox {
  live: boolean;
  messages: number;
  firstId?: string;
  /** Milliseconds from the first message's create_time to its arrival. */
  latencyMs?: number;
  /** The same for the latest message. */
  lastLatencyMs?: number;
}

/** A delivery row of the table. */
interface Delivery {
  name: string;
  expected: number;
  delivered: number;
  exactlyOnce: number;
  latencies: number[];
  note?: string;
}

/** Runs the chat part: prints its tables; every stream and process it started is gone after. */
export async function chatBench(ctx: ChatBenchContext): Promise<void> {
  const closers: Array<() => unknown> = [];
  try {
    await measure(ctx, (close) => closers.push(close));
  } finally {
    for (const close of closers.reverse())
      await Promise.resolve()
        .then(close)
        .catch(() => {});
  }
}

async function measure(ctx: ChatBenchContext, onClose: (close: () => unknown) => void): Promise<void> {
  const n = ctx.streams;
  console.log(
    `\n## Chat: ${n} Subscribe streams through the gateway (one user each, opened ${WAVE} at a time), then one message to each user\n`,
  );
  const makePeople = await peopleMaker(ctx, onClose);
  const chat = createServiceClient(ChatService, ctx.chat.addr);
  onClose(() => chat.close());
  const t0 = performance.now();
  const people = await makePeople(n + SENDERS, "chat");
  const subscribers = people.slice(0, n);
  const senders = people.slice(n);
  console.log(
    `users: ${people.length} made in ${((performance.now() - t0) / 1000).toFixed(1)} s by CreateUser at user (mesh credentials) and access tokens from auth's key ring over auth's database (no bcrypt sign-up; see bench/lib/chat.ts)`,
  );

  // Through the gateway.
  const memory = async () => ({
    gatewayHeap: await heapOf({ metricsUrl: `${ctx.gateway.url}/metrics`, pid: ctx.gateway.pid }),
    gatewayRss: await rssOf(ctx.gateway.pid),
    chatHeap: await heapOf(ctx.chat),
    chatRss: await rssOf(ctx.chat.pid),
  });
  const before = await memory();
  const endedBefore = await callsEnded(ctx.chat.metricsUrl, "Subscribe");
  const opened = performance.now();
  const viaGateway = subscribe(ctx.gateway.url, subscribers);
  onClose(() => viaGateway.held.close());
  await viaGateway.held.until(() => viaGateway.live() + viaGateway.ended() >= n, LIVE_WAIT_MS);
  const liveSeconds = (performance.now() - opened) / 1000;
  const live = viaGateway.holding();
  const after = await memory();

  // One message to each user, from SENDERS senders, one in flight each, straight to chat.
  const sent: Array<string | undefined> = new Array(n);
  const sendMs: number[] = [];
  let sendErrors = 0;
  let firstSendError: string | undefined;
  let next = 0;
  const pids = { chat: ctx.chat.pid, gateway: ctx.gateway.pid };
  const cpuBefore = await cpuOf(pids);
  const sendStart = performance.now();
  const sendDeadline = sendStart + SEND_MS;
  await Promise.all(
    senders.map(async (sender) => {
      while (next < n && performance.now() < sendDeadline) {
        const i = next++;
        const to = subscribers[i] as Person;
        const began = performance.now();
        try {
          const res = await chat.sendMessage(
            {
              to: { case: "recipientId", value: to.id },
              text: `bench ${i}`,
              clientMessageId: `b-${ctx.runId}-${i}`,
            },
            { accessToken: sender.token },
          );
          sent[i] = res.message?.id;
          sendMs.push(performance.now() - began);
        } catch (err) {
          sendErrors++;
          firstSendError ??= err instanceof Error ? err.message : String(err);
        }
      }
    }),
  );
  const sendSeconds = (performance.now() - sendStart) / 1000;
  const cpuAfter = await cpuOf(pids);
  const busy = (p: keyof typeof pids) =>
    `${p} ${((((cpuAfter[p] ?? 0) - (cpuBefore[p] ?? 0)) / sendSeconds) * 100).toFixed(0)}%`;
  const sentCount = sent.filter((id) => id !== undefined).length;
  await viaGateway.held.until(() => viaGateway.atLeast(1) >= sentCount, DELIVERY_WAIT_MS);
  const burst = viaGateway.delivery(
    `chat: SendMessage (${SENDERS} senders, straight to chat) commit → Subscribe through the gateway`,
    sent,
  );
  sendMs.sort((a, b) => a - b);
  const each = `p50 ${quantileOf(sendMs, 0.5).toFixed(1)} ms, p99 ${quantileOf(sendMs, 0.99).toFixed(1)} ms`;
  const failed = sendErrors > 0 ? `; ${sendErrors} failed, the first: ${firstSendError}` : "";
  burst.note = `${sentCount} sends of ${n} took ${sendSeconds.toFixed(1)} s (${(sentCount / sendSeconds).toFixed(0)}/s; each, as its sender saw it: ${each}; CPU meanwhile, of one core: ${busy("chat")}, ${busy("gateway")})${failed}`;
  const endedEarly = viaGateway.held.streams.find((s) => s.ended)?.ended;
  viaGateway.held.close();
  // chat ends the streams' subscriptions and presence in the background: the baseline waits.
  await untilCallsEnded(ctx.chat.metricsUrl, "Subscribe", endedBefore + n, CLOSE_WAIT_MS);

  const bare = await bareBurst(ctx, n, onClose);
  // Made now: the first tokens may be minutes old by the time it runs.
  const [crossSender, crossSubscriber] = (await makePeople(2, "cross")) as [Person, Person];
  const cross = await crossReplica(ctx, chat, crossSender, crossSubscriber, onClose);

  console.log(
    "\n| streams | live | seconds to live | gateway heap KiB/stream | gateway RSS KiB/stream | chat heap KiB/stream | chat RSS KiB/stream | bare grpc-js RSS KiB/stream |",
  );
  console.log("|--:|--:|--:|--:|--:|--:|--:|--:|");
  const per = (k: keyof typeof before) => kibPerStream(before[k], after[k], live);
  const gatewayHeapKib = Number(per("gatewayHeap"));
  console.log(
    `| ${n} | ${live} | ${liveSeconds.toFixed(1)} | ${per("gatewayHeap")} | ${per("gatewayRss")} | ${per("chatHeap")} | ${per("chatRss")} | ${bare.rssKib} |`,
  );
  if (endedEarly) console.log(`\n- ${viaGateway.ended()} stream(s) ended early; the first: ${endedEarly}`);

  console.log("\n| delivery | expected | delivered | exactly once | p50 ms | p99 ms | max ms | p99 / bare |");
  console.log("|---|--:|--:|--:|--:|--:|--:|--:|");
  const bareP99 = quantileOf(bare.delivery.latencies, 0.99);
  for (const d of [burst, bare.delivery, cross]) {
    const p = (q: number) => quantileOf(d.latencies, q).toFixed(1);
    const ratio = d === bare.delivery ? "1.00x" : `${(quantileOf(d.latencies, 0.99) / bareP99).toFixed(2)}x`;
    console.log(
      `| ${d.name} | ${d.expected} | ${d.delivered} | ${d.exactlyOnce} | ${p(0.5)} | ${p(0.99)} | ${p(1)} | ${d === cross ? "" : ratio} |`,
    );
  }
  for (const d of [burst, bare.delivery, cross]) if (d.note) console.log(`\n- ${d.name}: ${d.note}`);

  const p99 = quantileOf(burst.latencies, 0.99);
  const verdict = (ok: boolean) => (ok ? "met" : "MISSED");
  console.log(
    `\n- streams held: ${live} (target ≥ ${TARGET_STREAMS}${n < TARGET_STREAMS ? `; this run opened ${n}` : ""}) ${verdict(live >= TARGET_STREAMS)}`,
  );
  console.log(
    `- delivery to every user: ${burst.exactlyOnce} of ${n} exactly once, p99 ${p99.toFixed(1)} ms (target: all, p99 ≤ ${TARGET_P99_MS} ms and ≤ ${TARGET_BARE_RATIO}× bare grpc-js's ${bareP99.toFixed(1)} ms) ${verdict(burst.exactlyOnce === n && p99 <= TARGET_P99_MS && p99 <= TARGET_BARE_RATIO * bareP99)}`,
  );
  console.log(
    `- gateway heap per stream: ${per("gatewayHeap")} KiB (target ≤ ${TARGET_GATEWAY_HEAP_KIB} KiB) ${verdict(gatewayHeapKib <= TARGET_GATEWAY_HEAP_KIB)}`,
  );
  console.log(
    "\n(latency from the message's create_time, stamped in SendMessage's transaction a few statements before its commit, to its bytes reaching this process: an upper bound of commit → subscriber. Bare grpc-js stamps the time its writes begin. Heap used as /metrics reports it after a forced full collection; resident memory adds each stream's HTTP/2 buffers)",
  );
}

/** Makes users and their access tokens, as auth's sign-up and sign-in would end. */
async function peopleMaker(ctx: ChatBenchContext, onClose: (close: () => unknown) => void) {
  const config = readAuthConfig(ctx.authEnv);
  const log = createLogger("bench", "warn");
  const pool = createPool(config.databaseUrl, log, 2);
  onClose(() => pool.end());
  const kek = config.keyEncryptionKey;
  const keys = createKeyRing({
    store: createPgAuthStore(pool, {
      refreshS: config.refreshTokenTtlS,
      secrets: { seal: (plain) => seal(kek, plain), open: (sealed) => open(kek, sealed) },
    }),
    encryptionKey: kek,
    rotationS: config.keyRotationS,
    accessTokenTtlS: config.accessTokenTtlS,
    issuer: config.tokenIssuer,
    audience: config.tokenAudience,
    log,
  });
  const users = createServiceClient(UserService, ctx.userAddr, {
    mesh: createMeshCredentials(ctx.meshSecret, "bench"),
  });
  onClose(() => users.close());
  let made = 0;
  return async (count: number, label: string): Promise<Person[]> => {
    const people: Person[] = new Array(count);
    let next = 0;
    const deadline = performance.now() + USERS_MS;
    await Promise.all(
      Array.from({ length: Math.min(USER_LANES, count) }, async () => {
        while (next < count && performance.now() < deadline) {
          const i = next++;
          const id = randomUUID();
          const email = `${label}-${ctx.runId}-${made++}@example.com`;
          await users.createUser({ userId: id, email, displayName: `${label} ${i}` });
          const { token } = await keys.sign({
            userId: id,
            sessionId: randomUUID(),
            roles: ["user"],
            email,
            emailVerified: true,
          });
          people[i] = { id, token };
        }
      }),
    );
    if (next < count) throw new Error(`made ${next} of ${count} users within ${USERS_MS} ms`);
    return people;
  };
}

/** Subscribe streams at `url`, one per person, with what each has received. */
function subscribe(url: string, people: Person[]) {
  const inboxes: Inbox[] = people.map(() => ({ live: false, messages: 0 }));
  let live = 0;
  // [k]: streams that got at least k messages.
  const atLeast = [people.length];
  const held: GrpcStreams = openGrpcStreams({
    url,
    path: SUBSCRIBE,
    count: people.length,
    headers: (i) => ({ authorization: `Bearer ${people[i]?.token}` }),
    // An empty SubscribeRequest: after_seq unset, live events only.
    wave: WAVE,
    waveWaitMs: WAVE_WAIT_MS,
    onMessage(i, bytes, at) {
      const inbox = inboxes[i] as Inbox;
      if (!inbox.live) {
        inbox.live = true;
        live++;
      }
      const event = fromBinary(SubscribeResponseSchema, bytes).event;
      if (event.case !== "message") return;
      const created = event.value.createTime;
      inbox.lastLatencyMs = created
        ? performance.timeOrigin + at - (Number(created.seconds) * 1000 + created.nanos / 1e6)
        : Number.NaN;
      inbox.messages++;
      atLeast[inbox.messages] = (atLeast[inbox.messages] ?? 0) + 1;
      if (inbox.messages > 1) return;
      inbox.firstId = event.value.id;
      inbox.latencyMs = inbox.lastLatencyMs;
    },
  });
  return {
    held,
    inboxes,
    /** Streams that got their first frame (chat's heartbeat once it listens), ended or not. */
    live: () => live,
    /** Streams live and not ended. */
    holding: () => inboxes.filter((b, i) => b.live && !held.streams[i]?.ended).length,
    ended: () => held.ended(),
    /** Streams that got at least `k` messages. */
    atLeast: (k: number) => atLeast[k] ?? 0,
    /** The delivery row for `ids[i]` sent to stream i (undefined: not sent). */
    delivery(name: string, ids: ReadonlyArray<string | undefined>): Delivery {
      const got = inboxes.filter((b, i) => ids[i] !== undefined && b.messages > 0);
      return {
        name,
        expected: inboxes.length,
        delivered: got.length,
        exactlyOnce: inboxes.filter(
          (b, i) => ids[i] !== undefined && b.messages === 1 && b.firstId === ids[i],
        ).length,
        latencies: got.map((b) => b.latencyMs ?? Number.NaN).sort((a, b) => a - b),
      };
    },
  };
}

/** The baseline: the same number of streams on a bare grpc-js server, one write to each. */
async function bareBurst(ctx: ChatBenchContext, n: number, onClose: (close: () => unknown) => void) {
  const server = await ctx.startServer("bench/servers/bare-fanout.ts", {});
  onClose(() => server.stop());
  const people = Array.from({ length: n }, () => ({ id: "", token: "none" }));
  const rssBefore = await rssOf(server.pid);
  const streams = subscribe(`http://127.0.0.1:${server.port}`, people);
  try {
    await streams.held.until(() => streams.live() + streams.ended() >= n, LIVE_WAIT_MS);
    const live = streams.holding();
    const rssKib = kibPerStream(rssBefore, await rssOf(server.pid), live);
    // The first burst warms both ends' code up (chat's has, on its thousands of sends): the
    // second is timed.
    for (const k of [1, 2]) {
      process.kill(server.pid, "SIGUSR2");
      await streams.held.until(() => streams.atLeast(k) >= live, DELIVERY_WAIT_MS);
    }
    const got = streams.inboxes.filter((b) => b.messages >= 2);
    const delivery: Delivery = {
      name: "bare grpc-js: one pre-encoded write to every stream",
      expected: n,
      delivered: got.length,
      exactlyOnce: got.filter((b) => b.messages === 2).length,
      latencies: got.map((b) => b.lastLatencyMs ?? Number.NaN).sort((a, b) => a - b),
    };
    return { rssKib, delivery };
  } finally {
    streams.held.close();
    await server.stop();
  }
}

/** SendMessage on the gateway's replica, one at a time, to a subscriber on a second replica. */
async function crossReplica(
  ctx: ChatBenchContext,
  chat: ServiceClient<typeof ChatService>,
  sender: Person,
  subscriber: Person,
  onClose: (close: () => unknown) => void,
): Promise<Delivery> {
  const replica = await ctx.startChatReplica();
  onClose(() => replica.stop());
  const stream = subscribe(`http://127.0.0.1:${replica.port}`, [subscriber]);
  const latencies: number[] = [];
  let delivered = 0;
  let exactlyOnce = 0;
  try {
    if (!(await stream.held.until(() => stream.live() > 0, LIVE_WAIT_MS)))
      throw new Error("no stream on the second replica");
    const inbox = stream.inboxes[0] as Inbox;
    // The first message makes the conversation (and asks user about the recipient): not timed.
    const first = await chat.sendMessage(
      {
        to: { case: "recipientId", value: subscriber.id },
        text: "hello",
        clientMessageId: `x-${ctx.runId}-first`,
      },
      { accessToken: sender.token },
    );
    const conversationId = first.message?.conversationId ?? "";
    await stream.held.until(() => inbox.messages >= 1, CROSS_WAIT_MS);
    const deadline = performance.now() + CROSS_MS;
    for (let k = 0; k < ctx.crossMessages && performance.now() < deadline; k++) {
      const had = inbox.messages;
      await chat.sendMessage(
        {
          to: { case: "conversationId", value: conversationId },
          text: `cross ${k}`,
          clientMessageId: `x-${ctx.runId}-${k}`,
        },
        { accessToken: sender.token },
      );
      await stream.held.until(() => inbox.messages > had, CROSS_WAIT_MS);
      if (inbox.messages === had) continue;
      delivered++;
      if (inbox.messages === had + 1) exactlyOnce++;
      latencies.push(inbox.lastLatencyMs ?? Number.NaN);
    }
  } finally {
    stream.held.close();
    await replica.stop();
  }
  return {
    name: "chat across replicas at rest: SendMessage on A → Subscribe on B (one at a time)",
    expected: ctx.crossMessages,
    delivered,
    exactlyOnce,
    latencies: latencies.sort((a, b) => a - b),
  };
}
