// Many gRPC server streams held open from this process over raw node:http2 sessions, a bounded
// number per connection as HTTP/2 servers commonly allow, and what a process's memory is.
// Raw frames rather than a gRPC client: the client's own cost per stream must stay small next to
// the server's, and a message is timed the moment its bytes arrive.

import { readFile } from "node:fs/promises";
import * as http2 from "node:http2";
import { performance } from "node:perf_hooks";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";

// Per connection: about what HTTP/2 servers commonly let one client open at once.
const STREAMS_PER_SESSION = 100;
/** Lets heapOf collect a process's garbage first: add it to the process's NODE_OPTIONS. */
export const GC_ON_SIGNAL = `--import ${fileURLToPath(new URL("./gc-on-signal.mjs", import.meta.url))}`;
// How long a forced collection may take to show in the process's /metrics.
const GC_WAIT_MS = 5_000;
const GC_POLL_MS = 50;

/** A service process whose memory a part reads: gRPC address, pid, Prometheus endpoint. */
export interface ServiceProcess {
  addr: string;
  pid: number;
  metricsUrl: string;
}

/** What every part holding streams through the gateway gets from the run. */
export interface StreamsRun {
  gateway: { url: string; pid: number };
  meshSecret: string;
  /** Streams to hold open. */
  streams: number;
}

/** One held stream, as its messages arrive. */
export interface HeldStream {
  /** Messages received so far. */
  messages: number;
  /** When the latest one arrived (performance.now()). */
  lastAt: number;
  /** Why it ended, if it did: trailers, a reset or a connection error. */
  ended?: string;
}

/** Streams opened by openGrpcStreams. */
export interface GrpcStreams {
  readonly streams: HeldStream[];
  /** How many have ended. */
  ended(): number;
  /** Resolves true once `done()` holds (asked after each batch of messages and ends), false after `ms`. */
  until(done: () => boolean, ms: number): Promise<boolean>;
  /** Ends every stream and connection at once. */
  close(): void;
}

/**
 * Opens `count` server streams of `path` at `url` (`http://host:port`), each sending the one
 * request `body` (an unframed message; empty by default) with `headers(i)` added.
 * `onMessage` gets each response message's bytes as it arrives. With `wave`, streams open that
 * many at a time, the next wave once each of the last has had a message or ended (or after
 * `waveWaitMs`): a server whose streams answer at once is then not met by all of them at once.
 */
export function openGrpcStreams(opts: {
  url: string;
  path: string;
  count: number;
  headers?: (i: number) => http2.OutgoingHttpHeaders;
  body?: Uint8Array;
  onMessage?: (i: number, message: Buffer, at: number) => void;
  wave?: number;
  waveWaitMs?: number;
}): GrpcStreams {
  const body = opts.body ?? new Uint8Array(0);
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  const wave = opts.wave ?? opts.count;
  const sessions: http2.ClientHttp2Session[] = [];
  const streams: HeldStream[] = [];
  let changed = () => {};
  let ended = 0;
  let closed = false;
  let session: http2.ClientHttp2Session | undefined;
  // The current wave's streams yet to answer or end; the next wave opens at 0.
  let current = { waiting: 0 };
  let waveTimer: NodeJS.Timeout | undefined;

  const open = (i: number, wave: { waiting: number }) => {
    if (i % STREAMS_PER_SESSION === 0) {
      session = http2.connect(opts.url);
      session.on("error", () => {}); // every stream on it reports its own end
      sessions.push(session);
    }
    const held: HeldStream = { messages: 0, lastAt: 0 };
    streams.push(held);
    let waited = true;
    const settle = () => {
      if (!waited) return;
      waited = false;
      if (--wave.waiting === 0 && wave === current) openWave();
    };
    const stream = (session as http2.ClientHttp2Session).request({
      ":method": "POST",
      ":path": opts.path,
      "content-type": "application/grpc",
      te: "trailers",
      ...opts.headers?.(i),
    });
    stream.end(frame);
    let pending: Buffer = Buffer.alloc(0);
    stream.on("data", (chunk: Buffer) => {
      const at = performance.now();
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
        const end = 5 + pending.readUInt32BE(1);
        held.messages++;
        held.lastAt = at;
        opts.onMessage?.(i, pending.subarray(5, end), at);
        pending = pending.subarray(end);
        settle();
      }
      changed();
    });
    stream.on("trailers", (t) => {
      held.ended = `grpc-status ${t["grpc-status"]} ${t["grpc-message"] ?? ""}`;
    });
    // A reset connection ends its streams: reported as streams not live, not a crash.
    stream.on("error", (err) => {
      held.ended ??= err.message;
    });
    stream.on("close", () => {
      held.ended ??= `closed (${stream.rstCode})`;
      ended++;
      settle();
      changed();
    });
  };

  function openWave() {
    clearTimeout(waveTimer);
    const from = streams.length;
    const to = Math.min(opts.count, from + wave);
    if (closed || from === to) return;
    current = { waiting: to - from };
    for (let i = from; i < to; i++) open(i, current);
    if (to < opts.count && opts.waveWaitMs !== undefined) waveTimer = setTimeout(openWave, opts.waveWaitMs);
  }
  openWave();

  return {
    streams,
    ended: () => ended,
    until: (done, ms) =>
      new Promise<boolean>((resolve) => {
        let settled = false;
        const finish = (ok: boolean) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          // A later wait may have taken over the notifier already: leave it be.
          if (changed === notify) changed = () => {};
          resolve(ok);
        };
        const timer = setTimeout(() => finish(false), ms);
        // Asked once per batch of socket reads, not per message: a check walks every stream,
        // and asking it after each of 10,000 messages would make this client the bottleneck.
        let asked = false;
        const notify = () => {
          if (asked || settled) return;
          asked = true;
          setImmediate(() => {
            asked = false;
            if (!settled && done()) finish(true);
          });
        };
        changed = notify;
        notify();
      }),
    close() {
      closed = true;
      clearTimeout(waveTimer);
      for (const s of sessions) s.destroy();
    },
  };
}

/** Nearest-rank quantile of ascending values; NaN when there are none. */
export function quantileOf(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? Number.NaN;
}

/**
 * The heap a process reports at its Prometheus endpoint (NaN without one), after a full garbage
 * collection when it loaded GC_ON_SIGNAL; otherwise garbage not yet collected counts too.
 */
export async function heapOf(proc: { metricsUrl: string; pid: number }): Promise<number> {
  const metric = (text: string, name: string) =>
    Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
  const read = () =>
    fetch(proc.metricsUrl).then(
      (r) => r.text(),
      () => "",
    );
  // No line yet: no major collection so far.
  const majors = (text: string) => metric(text, 'nodejs_gc_duration_seconds_count\\{kind="major"\\}') || 0;
  const environ = await readFile(`/proc/${proc.pid}/environ`, "utf8").catch(() => "");
  // Without the handler, SIGUSR2 would end the process.
  if (environ.includes(GC_ON_SIGNAL)) {
    const before = majors(await read());
    process.kill(proc.pid, "SIGUSR2");
    const deadline = performance.now() + GC_WAIT_MS;
    while (performance.now() < deadline) {
      const text = await read();
      if (majors(text) > before) return metric(text, "nodejs_heap_size_used_bytes");
      await delay(GC_POLL_MS);
    }
  }
  return metric(await read(), "nodejs_heap_size_used_bytes");
}

/** A process's resident memory in bytes. */
export async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN) * 1024;
}

/** KiB per stream between two readings, or n/a when either is missing or no stream was held. */
export function kibPerStream(before: number, after: number, streams: number): string {
  const kib = (after - before) / streams / 1024;
  return streams > 0 && Number.isFinite(kib) ? kib.toFixed(1) : "n/a";
}

/** How many calls of the method a service has finished, by its /metrics (0 when unreachable). */
export async function callsEnded(metricsUrl: string, method: string): Promise<number> {
  const text = await fetch(metricsUrl).then(
    (r) => r.text(),
    () => "",
  );
  let sum = 0;
  const line = new RegExp(`^grpc_server_handled_total\\{[^}]*method="${method}"[^}]*\\} (\\S+)$`, "gm");
  for (const m of text.matchAll(line)) sum += Number(m[1]);
  return sum;
}

/** Waits until the service has finished `count` calls of the method in all, or `ms` passed. */
export async function untilCallsEnded(
  metricsUrl: string,
  method: string,
  count: number,
  ms: number,
): Promise<void> {
  const deadline = performance.now() + ms;
  while ((await callsEnded(metricsUrl, method)) < count && performance.now() < deadline) await delay(200);
}
