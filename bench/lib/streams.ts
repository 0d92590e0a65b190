// Idle server streams through the gateway (issue 8, for chat): many WatchMyNotifications streams
// of one user held open over gRPC, what each costs the gateway (and notify) in resident memory,
// and how long one notification takes to reach every one of them. One user on purpose: a single
// SendEmail to that user is then a burst of one message to each stream.

import { performance } from "node:perf_hooks";
import { NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { createMeshCredentials, createServiceClient, type ServiceClient } from "@protomesh/platform";
import {
  type GrpcStreams,
  heapOf,
  kibPerStream,
  openGrpcStreams,
  quantileOf,
  rssOf,
  type ServiceProcess,
  type StreamsRun,
} from "./grpc-streams.ts";

/** What the streams part needs from the run that started the mesh. */
export interface StreamsContext extends StreamsRun {
  notify: ServiceProcess;
  /** The signed-in user's access token and email. */
  token: string;
  email: string;
}

// Bounds of the wait for every stream to be live end to end: one notification per try.
const READY_TRIES = 20;
const READY_WAIT_MS = 3_000;
const BURST_WAIT_MS = 10_000;
const BURST_P99_MS = 200;

const WATCH = `/${NotifyService.typeName}/${NotifyService.method.watchMyNotifications.name}`;

/** Opens the streams, measures memory per stream and one burst, prints the figures, closes them. */
export async function streamsBench(ctx: StreamsContext): Promise<void> {
  const notify = createServiceClient(NotifyService, ctx.notify.addr, {
    mesh: createMeshCredentials(ctx.meshSecret, "bench"),
  });
  // Closed here, not at the end of the run: the parts after this one must not share the
  // gateway with thousands of open streams.
  let held: GrpcStreams | undefined;
  try {
    const before = await memory(ctx);
    held = openGrpcStreams({
      url: ctx.gateway.url,
      path: WATCH,
      count: ctx.streams,
      headers: () => ({ authorization: `Bearer ${ctx.token}` }),
    });
    await measure(ctx, notify, held, before);
  } finally {
    held?.close();
    notify.close();
  }
}

const memory = async (ctx: StreamsContext) => ({
  gatewayHeap: await heapOf({ metricsUrl: `${ctx.gateway.url}/metrics`, pid: ctx.gateway.pid }),
  gatewayRss: await rssOf(ctx.gateway.pid),
  notifyHeap: await heapOf(ctx.notify),
});

async function measure(
  ctx: StreamsContext,
  notify: ServiceClient<typeof NotifyService>,
  held: GrpcStreams,
  before: Awaited<ReturnType<typeof memory>>,
): Promise<void> {
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
  // Once every stream has more than `counts[i]` messages (or ended), or after `ms`.
  const allPast = (counts: number[], ms: number) =>
    held.until(() => watches.every((w, i) => w.messages > (counts[i] ?? 0) || w.ended), ms);

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
      ready = await allPast([], READY_WAIT_MS);
  }
  const live = watches.filter((w) => w.messages > 0 && !w.ended).length;
  const after = await memory(ctx);

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
  await allPast(counts, BURST_WAIT_MS);
  const delays = watches
    .filter((w, i) => w.messages > (counts[i] ?? 0))
    .map((w) => w.lastAt - t0)
    .sort((a, b) => a - b);
  const at = (q: number) => quantileOf(delays, q);
  // n/a when a process does not report it (no /metrics) or no stream was live.
  const perStream = (k: keyof typeof before) => kibPerStream(before[k], after[k], live);
  const ended = watches.find((w) => w.ended)?.ended;

  console.log(
    `\n## WatchMyNotifications: ${ctx.streams} idle streams of one user through the gateway (gRPC)\n`,
  );
  console.log(
    "| streams | live | gateway heap KiB/stream | gateway RSS KiB/stream | notify heap KiB/stream | burst delivered | SendEmail answered ms | first ms | p50 ms | p99 ms | max ms |",
  );
  console.log("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
  console.log(
    `| ${ctx.streams} | ${live} | ${perStream("gatewayHeap")} | ${perStream("gatewayRss")} | ${perStream("notifyHeap")} | ${delays.length} | ${answered.toFixed(1)} | ${at(0).toFixed(1)} | ${at(0.5).toFixed(1)} | ${at(0.99).toFixed(1)} | ${at(1).toFixed(1)} |`,
  );
  const endedCount = watches.filter((w) => w.ended).length;
  if (ended) console.log(`\n- ${endedCount} stream(s) ended early; the first: ${ended}`);
  const met = delays.length === ctx.streams && at(0.99) <= BURST_P99_MS;
  console.log(
    `\nburst to every stream: p99 ${at(0.99).toFixed(1)} ms, ${delays.length} of ${ctx.streams} delivered (target: all, p99 ≤ ${BURST_P99_MS} ms) ${met ? "met" : "MISSED"}`,
  );
  console.log(
    "(heap used as the processes' /metrics report it after a forced full collection; resident memory adds each stream's HTTP/2 buffers)",
  );
}
