// Idle server streams through the gateway (issue 8, for chat): many WatchMyNotifications streams
// of one user held open over gRPC, what each costs the gateway (and notify) in resident memory,
// and how long one notification takes to reach every one of them. One user on purpose: a single
// SendEmail to that user is then a burst of one message to each stream.

import { performance } from "node:perf_hooks";
import { ChatService } from "@protomesh/contracts/chat/v1/chat_pb";
import { NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { createMeshCredentials, createServiceClient, type ServiceClient } from "@protomesh/platform";
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
import type { StartedProcess } from "./procs.ts";

/** What the streams part needs from the run that started the mesh. */
export interface StreamsContext extends StreamsRun {
  notify: ServiceProcess;
  /** Starts the bare baseline server (a child process, stopped by the caller's cleanup too). */
  startServer(entry: string, env: Record<string, string>): Promise<StartedProcess>;
  /** The signed-in user's access token and email. */
  token: string;
  email: string;
}

// Bounds of the wait for every stream to be live end to end: one notification per try.
const READY_TRIES = 20;
const READY_WAIT_MS = 3_000;
const BURST_WAIT_MS = 10_000;
const BURST_P99_MS = 200;

const WATCH_METHOD = NotifyService.method.watchMyNotifications.name;
const WATCH = `/${NotifyService.typeName}/${WATCH_METHOD}`;
const CLOSE_WAIT_MS = 30_000;
const BARE = `/${ChatService.typeName}/${ChatService.method.subscribe.name}`;

/**
 * Opens the streams through the gateway, measures memory per stream and one burst; then the same
 * burst to as many streams straight to notify, and to a bare grpc-js server; prints the figures.
 */
export async function streamsBench(ctx: StreamsContext): Promise<void> {
  const notify = createServiceClient(NotifyService, ctx.notify.addr, {
    mesh: createMeshCredentials(ctx.meshSecret, "bench"),
  });
  // Closed here, not at the end of the run: the parts after this one must not share the
  // gateway with thousands of open streams.
  let held: GrpcStreams | undefined;
  const open = (url: string) =>
    openGrpcStreams({
      url,
      path: WATCH,
      count: ctx.streams,
      headers: () => ({ authorization: `Bearer ${ctx.token}` }),
    });
  try {
    const before = await memory(ctx);
    const ended = await callsEnded(ctx.notify.metricsUrl, WATCH_METHOD);
    held = open(ctx.gateway.url);
    const viaGateway = await burst(ctx, notify, held);
    // Read after the burst, not before: the forced full collections it asks for would still
    // be sweeping when the burst began.
    const after = await memory(ctx);
    held.close();
    // The direct streams meet a notify that has let go of the gateway's.
    await untilCallsEnded(ctx.notify.metricsUrl, WATCH_METHOD, ended + ctx.streams, CLOSE_WAIT_MS);
    held = open(`http://${ctx.notify.addr}`);
    const direct = await burst(ctx, notify, held);
    held.close();
    // n/a when a process does not report it (no /metrics) or no stream was live.
    const perStream = (k: keyof typeof before) => kibPerStream(before[k], after[k], viaGateway.live);
    report(
      ctx,
      {
        live: viaGateway.live,
        gatewayHeap: perStream("gatewayHeap"),
        gatewayRss: perStream("gatewayRss"),
        notifyHeap: perStream("notifyHeap"),
      },
      viaGateway,
      direct,
      await bareBurst(ctx),
    );
  } finally {
    held?.close();
    notify.close();
  }
}

/**
 * The baseline: as many streams straight to a bare grpc-js server (no gateway, NATS or database),
 * which writes one pre-encoded message to each when signalled. Delays from the signal.
 */
async function bareBurst(ctx: StreamsContext): Promise<number[]> {
  const server = await ctx.startServer("bench/servers/bare-fanout.ts", {});
  const held = openGrpcStreams({ url: `http://127.0.0.1:${server.port}`, path: BARE, count: ctx.streams });
  try {
    await allPast(held, [], BURST_WAIT_MS);
    // The first burst warms both ends up, as the ready sends did on the gateway path.
    let delays: number[] = [];
    for (let k = 0; k < 2; k++) {
      const counts = held.streams.map((w) => w.messages);
      const t0 = performance.now();
      process.kill(server.pid, "SIGUSR2");
      await allPast(held, counts, BURST_WAIT_MS);
      delays = delaysSince(held, counts, t0);
    }
    return delays;
  } finally {
    held.close();
    await server.stop();
  }
}

/** Once every stream has more than `counts[i]` messages (or ended), or after `ms`. */
const allPast = (held: GrpcStreams, counts: number[], ms: number) =>
  held.until(() => held.streams.every((w, i) => w.messages > (counts[i] ?? 0) || w.ended), ms);

/** When each stream that got a message past `counts[i]` got its latest, from t0, ascending. */
const delaysSince = (held: GrpcStreams, counts: number[], t0: number) =>
  held.streams
    .filter((w, i) => w.messages > (counts[i] ?? 0))
    .map((w) => w.lastAt - t0)
    .sort((a, b) => a - b);

const memory = async (ctx: StreamsContext) => ({
  gatewayHeap: await heapOf({ metricsUrl: `${ctx.gateway.url}/metrics`, pid: ctx.gateway.pid }),
  gatewayRss: await rssOf(ctx.gateway.pid),
  notifyHeap: await heapOf(ctx.notify),
});

/** Waits until every stream is live, then times one notification to all of them. */
async function burst(ctx: StreamsContext, notify: ServiceClient<typeof NotifyService>, held: GrpcStreams) {
  const userId = JSON.parse(Buffer.from(ctx.token.split(".")[1] ?? "", "base64url").toString()).sub as string;
  let sent = 0;
  const send = () =>
    notify.sendEmail({
      to: ctx.email,
      subject: `Bench ${++sent}`,
      text: "Bench message.",
      userId,
      kind: "bench",
    });

  const watches = held.streams;

  // A stream is live once a message reached it: notify subscribes it only when the call gets
  // there, so notifications are sent until every stream has had one.
  // A refused send (the mail server was slow while the streams opened) only costs a try.
  let ready = false;
  for (let i = 0; i < READY_TRIES && !ready; i++) {
    if (
      await send().then(
        () => true,
        () => false,
      )
    )
      ready = await allPast(held, [], READY_WAIT_MS);
  }
  const live = watches.filter((w) => w.messages > 0 && !w.ended).length;

  // The burst: one notification, delivered to every live stream.
  const counts = watches.map((w) => w.messages);
  let t0 = performance.now();
  for (let i = 0; ; i++) {
    t0 = performance.now();
    const refused = await send().then(
      () => undefined,
      (err: unknown) => err,
    );
    if (refused === undefined) break;
    if (i === READY_TRIES) throw refused;
  }
  // Where the time goes: SendEmail's answer (the mail sent and the notification stored), then
  // the first stream reached (its event through NATS to notify's streams), then the last.
  const answered = performance.now() - t0;
  await allPast(held, counts, BURST_WAIT_MS);
  return {
    live,
    answered,
    delays: delaysSince(held, counts, t0),
    ended: watches.filter((w) => w.ended).length,
    firstEnd: watches.find((w) => w.ended)?.ended,
  };
}

type Burst = Awaited<ReturnType<typeof burst>>;

function report(
  ctx: StreamsContext,
  m: { live: number; gatewayHeap: string; gatewayRss: string; notifyHeap: string },
  viaGateway: Burst,
  direct: Burst,
  bare: number[],
): void {
  const ms = (sorted: number[], q: number) => quantileOf(sorted, q).toFixed(1);
  console.log(
    `\n## WatchMyNotifications: ${ctx.streams} idle streams of one user through the gateway (gRPC)\n`,
  );
  console.log(
    "| streams | live | gateway heap KiB/stream | gateway RSS KiB/stream (after the burst) | notify heap KiB/stream |",
  );
  console.log("|--:|--:|--:|--:|--:|");
  console.log(`| ${ctx.streams} | ${m.live} | ${m.gatewayHeap} | ${m.gatewayRss} | ${m.notifyHeap} |`);
  console.log(
    "\n| one message to every stream | delivered | SendEmail answered ms | first ms | p50 ms | p99 ms | max ms | (p99 − answered) ÷ bare p99 |",
  );
  console.log("|---|--:|--:|--:|--:|--:|--:|--:|");
  const bareP99 = quantileOf(bare, 0.99);
  // Against bare grpc-js's fan-out from its signal, ours counts from SendEmail's answer (the
  // notification stored): what is left is the event's way to notify and the fan-out.
  const ratio = (d: number[], answered: number) =>
    bareP99 > 0 ? `${((quantileOf(d, 0.99) - answered) / bareP99).toFixed(2)}×` : "n/a";
  const row = (name: string, d: number[], answered: number | undefined) =>
    console.log(
      `| ${name} | ${d.length} | ${answered?.toFixed(1) ?? "—"} | ${ms(d, 0)} | ${ms(d, 0.5)} | ${ms(d, 0.99)} | ${ms(d, 1)} | ${ratio(d, answered ?? 0)} |`,
    );
  const bursts = [
    ["SendEmail → notify → gateway (from the call)", viaGateway],
    ["SendEmail → notify, no gateway (from the call)", direct],
  ] as const;
  for (const [name, b] of bursts) row(name, b.delays, b.answered);
  row("bare grpc-js, pre-encoded, no gateway (from the signal)", bare, undefined);
  for (const [name, b] of bursts)
    if (b.firstEnd) console.log(`\n- ${name}: ${b.ended} stream(s) ended early; the first: ${b.firstEnd}`);
  const f = viaGateway;
  const p99 = quantileOf(f.delays, 0.99);
  const met = f.delays.length === ctx.streams && p99 <= BURST_P99_MS;
  console.log(
    `\nburst to every stream: p99 ${p99.toFixed(1)} ms, ${f.delays.length} of ${ctx.streams} delivered (target: all, p99 ≤ ${BURST_P99_MS} ms) ${met ? "met" : "MISSED"}; bare grpc-js's fan-out alone: p99 ${bareP99.toFixed(1)} ms on this machine`,
  );
  console.log(
    "(heap used as the processes' /metrics report it after a forced full collection; resident memory adds each stream's HTTP/2 buffers)",
  );
}
