// Load from native generators: h2load (HTTP/2, cleartext) and wrk (HTTP/1.1). A Node client
// saturates before grpc-js does on a 2-core machine, so a ratio it measures is partly its own;
// these spend microseconds per request on one thread and leave the machine to the processes
// under test.
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureCommand } from "@protomesh/devkit";
import { type LoadBudget, type LoadResult, type PhaseStats, summarize } from "./load.ts";

/** Installs h2load and wrk (Debian packages) when they are missing. */
export function ensureLoadTools(): void {
  ensureCommand("h2load", "nghttp2-client");
  ensureCommand("wrk", "wrk");
}

/** One kind of request, sent over and over: pre-encoded once, so the generator only copies bytes. */
export interface NativeRequest {
  /** h2: h2load over cleartext HTTP/2 (prior knowledge); h1: wrk over HTTP/1.1 keep-alive. */
  http: "h2" | "h1";
  /** Full URL, with the query for a GET. */
  url: string;
  method: "GET" | "POST";
  headers: Record<string, string>;
  /** The POST body (may be empty: an empty protobuf message encodes to no bytes). */
  body?: Uint8Array;
  /** Length of a good answer's body, learnt from one probe call: a shorter one is an error. */
  answerBytes: number;
}

/** How hard and how long (wrk stops at maxRequests; h2load ignores -n when timed). Both run single-threaded. */
export interface NativeLoad extends LoadBudget {
  /** Requests in flight: h2load's clients × streams per client; wrk's connections. */
  connections: number;
  /** HTTP/2 streams per connection (h2load -m); wrk has one request per connection. */
  streams: number;
  /** Processes whose CPU time is read before and after the measured run. */
  pids: Record<string, number>;
  /** Requests per second in all, for a fixed-rate run (h2load only); unset, as fast as answered. */
  rate?: number;
}

/** One measured run: its load result and the CPU seconds each process in `pids` spent in it. */
export interface NativeRun {
  result: LoadResult;
  cpuSeconds: Record<string, number>;
}

// Not pinned to a core (taskset): h2load spends about 10 µs of CPU per request (0.18 s for
// 18,000 in 3 s here), a few per cent of a core at these rates; and in quick runs on the shared
// 2-core machine (load average 6–8), pinned to core 0 or left to float, the spread between runs
// was the same (nginx ÷ direct 1.00–1.06 pinned, 1.08–1.33 floating; gateway gRPC ÷ nginx
// 0.18–0.25 and 0.11–0.19): the noise is the neighbours', not the generator's. Interleaved
// rounds (gateway.ts) are what steady the figures.
const KILL_GRACE_MS = 15_000;

/** Warms up, then measures one request kind, reading the processes' CPU around the measured part. */
export async function nativeLoad(name: string, req: NativeRequest, load: NativeLoad): Promise<NativeRun> {
  const dir = await mkdtemp(join(tmpdir(), "protomesh-load-"));
  try {
    const run = req.http === "h2" ? h2load : wrk;
    await run(req, load, load.warmupMs, dir);
    const before = await cpuOf(load.pids);
    const measured = await run(req, load, load.durationMs, dir);
    const after = await cpuOf(load.pids);
    return {
      result: summarize(name, measured.latencies, measured),
      cpuSeconds: Object.fromEntries(Object.entries(after).map(([p, s]) => [p, s - (before[p] ?? 0)])),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

type Measured = PhaseStats & { latencies: Float64Array };

function generator(args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      args[0] as string,
      args.slice(1),
      { timeout: timeoutMs + KILL_GRACE_MS, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) =>
        err ? reject(new Error(`${args[0]}: ${err.message}\n${stdout}${stderr}`)) : resolve(stdout),
    );
  });
}

async function h2load(req: NativeRequest, load: NativeLoad, ms: number, dir: string): Promise<Measured> {
  const args = [
    "h2load",
    `--clients=${load.connections}`,
    `--max-concurrent-streams=${load.streams}`,
    `--duration=${ms}ms`,
    ...(load.rate === undefined ? [] : [`--rps=${load.rate / load.connections}`]),
    ...Object.entries(req.headers).map(([k, v]) => `--header=${k}: ${v}`),
  ];
  if (req.body && req.body.length > 0) {
    const body = join(dir, "body");
    await writeFile(body, req.body);
    args.push(`--data=${body}`);
  } else if (req.method === "POST") {
    // h2load cannot map an empty file: an empty POST is a method and no DATA frame.
    args.push("--header=:method: POST");
  }
  // Per-request lines (start µs, status, duration µs): h2load prints only mean and sd itself.
  const log = join(dir, "requests.log");
  args.push(`--log-file=${log}`, req.url);
  const out = await generator(args, ms);
  const lines = (await readFile(log, "utf8")).split("\n");
  await rm(log);

  const okMs: number[] = [];
  let bad = 0;
  let firstError: string | undefined;
  for (const line of lines) {
    if (line === "") continue;
    const [, status, micros] = line.split("\t");
    if (status?.startsWith("2")) okMs.push(Number(micros) / 1000);
    else {
      bad++;
      firstError ??= `HTTP status ${status}`;
    }
  }
  const done = number(out, /requests: \d+ total, \d+ started, (\d+) done/);
  // An error sent as HTTP 200 (gRPC's trailers-only answer) has no body: count the bytes too.
  // h2load gives only the total, error bodies included, so this is a lower bound; but any
  // shortfall at all counts as at least one error.
  const dataBytes = number(out, /traffic: .*?, [\d.]+\w*B \((\d+)\) data/);
  const missing = Math.max(0, Math.ceil((okMs.length * req.answerBytes - dataBytes) / req.answerBytes));
  if (missing > 0) firstError ??= `${missing} answer(s) without the expected ${req.answerBytes}-byte body`;
  const failed = Math.max(0, done - okMs.length - bad);
  if (failed > 0) firstError ??= `${failed} request(s) failed before an answer`;
  return {
    successes: okMs.length - missing,
    errors: bad + missing + failed,
    ...(firstError === undefined ? {} : { firstError }),
    seconds: ms / 1000,
    // The latencies of 2xx answers (a bodiless one among them cannot be told apart).
    latencies: Float64Array.from(okMs),
  };
}

async function wrk(req: NativeRequest, load: NativeLoad, ms: number, dir: string): Promise<Measured> {
  if (load.rate !== undefined) throw new Error("wrk: no fixed rate (that is wrk2, which Debian lacks)");
  const script = join(dir, "request.lua");
  await writeFile(script, wrkScript(req, load.maxRequests));
  // wrk takes whole seconds only.
  const seconds = Math.max(1, Math.round(ms / 1000));
  const out = await generator(
    [
      "wrk",
      "--threads=1",
      // h2load waits for every answer; wrk's default would count one slower than 2 s as an error.
      "--timeout=10s",
      `--connections=${load.connections}`,
      `--duration=${seconds}s`,
      `--script=${script}`,
      req.url,
    ],
    seconds * 1000,
  );
  const line = out.split("\n").find((l) => l.startsWith("{"));
  if (!line) throw new Error(`wrk printed no summary:\n${out}`);
  const s = JSON.parse(line) as {
    ok: number;
    bad: number;
    short: number;
    socket: number;
    seconds: number;
    status: string;
    /** [µs, how many answers took that long] */
    latency: [number, number][];
  };
  const firstError =
    s.bad > 0
      ? `HTTP status ${s.status}`
      : s.short > 0
        ? `${s.short} answer(s) without the expected ${req.answerBytes}-byte body`
        : s.socket > 0
          ? `${s.socket} socket error(s)`
          : undefined;
  const latencies: number[] = [];
  for (const [us, n] of s.latency) for (let i = 0; i < n; i++) latencies.push(us / 1000);
  return {
    successes: s.ok,
    errors: s.bad + s.short + s.socket,
    ...(firstError === undefined ? {} : { firstError }),
    seconds: s.seconds,
    latencies: Float64Array.from(latencies),
  };
}

// wrk keeps each thread's Lua state apart: counters live in the thread, and done() (in the main
// state) collects them. wrk's latency histogram (`latency(i)`: the i-th distinct µs value and how
// many answers took it) covers every answer, good or
// not; with no errors, as in every run worth reading, they are the same.
function wrkScript(req: NativeRequest, maxRequests: number): string {
  const lua = (s: string) => {
    if (!/^[\x20-\x7e]*$/.test(s)) throw new Error(`wrk: only printable ASCII in requests, got ${s}`);
    return JSON.stringify(s);
  };
  const headers = Object.entries(req.headers)
    .map(([k, v]) => `wrk.headers[${lua(k)}] = ${lua(v)}`)
    .join("\n");
  const body =
    req.body && req.body.length > 0 ? `wrk.body = ${lua(Buffer.from(req.body).toString("latin1"))}` : "";
  return `wrk.method = ${lua(req.method)}
${headers}
${body}
local threads = {}
function setup(thread) table.insert(threads, thread) end
ok, bad, short, status = 0, 0, 0, nil
function response(code, headers, answer)
  if code >= 200 and code < 300 then
    if #answer == ${req.answerBytes} then ok = ok + 1 else short = short + 1 end
  else
    bad = bad + 1
    status = status or tostring(code)
  end
  if ok + bad + short >= ${maxRequests} then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local ok, bad, short, status = 0, 0, 0, nil
  for _, t in ipairs(threads) do
    ok = ok + t:get("ok"); bad = bad + t:get("bad"); short = short + t:get("short")
    status = status or t:get("status")
  end
  local buckets = {}
  for i = 1, #latency do
    buckets[i] = string.format("[%d,%d]", latency(i))
  end
  local e = summary.errors
  io.write(string.format('{"ok":%d,"bad":%d,"short":%d,"socket":%d,"seconds":%f,"status":"%s","latency":[%s]}\\n',
    ok, bad, short, e.connect + e.read + e.write + e.timeout, summary.duration / 1e6, status or "",
    table.concat(buckets, ",")))
end
`;
}

function number(text: string, pattern: RegExp): number {
  const m = pattern.exec(text);
  if (!m?.[1]) throw new Error(`cannot read ${pattern} from:\n${text}`);
  return Number(m[1]);
}

const TICKS_PER_SECOND = 100; // USER_HZ, fixed at 100 on Linux whatever the kernel's own HZ

/** CPU seconds (user + system) of each process and everything it started (nginx's workers). */
export async function cpuOf(pids: Record<string, number>): Promise<Record<string, number>> {
  const procs = new Map<number, { ppid: number; ticks: number }>();
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    // The command name may hold spaces and parentheses: fields are counted after its last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields.length < 13) continue;
    procs.set(Number(entry), { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) });
  }
  const total = (pid: number): number => {
    let ticks = procs.get(pid)?.ticks ?? 0;
    for (const [child, p] of procs) if (p.ppid === pid) ticks += total(child);
    return ticks;
  };
  return Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, total(pid) / TICKS_PER_SECOND]));
}
