// The gateway figures of `npm run bench` (issue 8): GetMe with a real access token, driven by
// native generators, side by side in one run: direct to the user service (grpc-js, the
// ceiling); through nginx's grpc_pass (the peer to beat); through a naive connect-node forwarder
// (the floor); through a bare node:http2 proxy (what any Node hop costs); and through the
// gateway in every protocol it speaks.
import * as http from "node:http";
import * as http2 from "node:http2";
import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import { GetMeRequestSchema, UserService } from "@protomesh/contracts/user/v1/user_pb";
import { type BenchRun, interleaved, type LoadResult } from "./load.ts";
import { ensureLoadTools, type NativeRequest, nativeLoad } from "./native-load.ts";
import { startNginx } from "./nginx.ts";
import type { StartedProcess } from "./procs.ts";

/** What the gateway part needs from the run that started the mesh. */
export interface GatewayBenchContext extends Pick<BenchRun, "load" | "rounds" | "onClose"> {
  /** A signed-in user's access token and email (the email shows up in every good answer). */
  token: string;
  email: string;
  user: { addr: string; pid: number };
  gateway: { url: string; pid: number };
  /** Starts a bench server (the naive forwarder) as a child process. */
  startServer(entry: string, env: Record<string, string>): Promise<StartedProcess>;
}

type Protocol =
  | "gRPC"
  | "gRPC-web"
  | "Connect binary"
  | "Connect JSON"
  | "Connect JSON/1.1"
  | "Connect GET/1.1";

// 32 requests in flight, as in the bench's other tables: over HTTP/2, 4 connections of 8 streams
// (as a few browser tabs or grpc-js channels would hold); over HTTP/1.1, which has one request
// per connection at a time, 32 keep-alive connections.
const H2_CONNECTIONS = 4;
const H2_STREAMS = 8;
const H1_CONNECTIONS = 32;

const GET_ME = `/${UserService.typeName}/${UserService.method.getMe.name}`;
// Encoded once: the generators then only copy bytes. GetMeRequest is empty, so its binary form
// is no bytes at all and its JSON `{}`, as a real client sends them.
const REQUEST = create(GetMeRequestSchema);
const BINARY = toBinary(GetMeRequestSchema, REQUEST);
const JSON_BODY = new TextEncoder().encode(toJsonString(GetMeRequestSchema, REQUEST));

/** gRPC and gRPC-web carry a message as a frame: a flag byte, a 4-byte length, the bytes. */
function frame(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

function request(protocol: Protocol, baseUrl: string, token: string): Omit<NativeRequest, "answerBytes"> {
  const authorization = `Bearer ${token}`;
  const post = (http: "h1" | "h2", headers: Record<string, string>, body: Uint8Array) => ({
    http,
    url: `${baseUrl}${GET_ME}`,
    method: "POST" as const,
    headers: { ...headers, authorization },
    body,
  });
  const connect = { "connect-protocol-version": "1" };
  switch (protocol) {
    case "gRPC":
      return post("h2", { "content-type": "application/grpc", te: "trailers" }, frame(BINARY));
    case "gRPC-web":
      return post("h2", { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" }, frame(BINARY));
    case "Connect binary":
      return post("h2", { ...connect, "content-type": "application/proto" }, BINARY);
    case "Connect JSON":
      return post("h2", { ...connect, "content-type": "application/json" }, JSON_BODY);
    case "Connect JSON/1.1":
      return post("h1", { ...connect, "content-type": "application/json" }, JSON_BODY);
    case "Connect GET/1.1": {
      const message = encodeURIComponent(new TextDecoder().decode(JSON_BODY));
      return {
        http: "h1",
        url: `${baseUrl}${GET_ME}?connect=v1&encoding=json&message=${message}`,
        method: "GET",
        headers: { authorization },
      };
    }
  }
}

interface Answer {
  status: number;
  headers: Record<string, unknown>;
  body: Buffer;
}

function send(req: Omit<NativeRequest, "answerBytes">): Promise<Answer> {
  const url = new URL(req.url);
  return new Promise((resolve, reject) => {
    const collect = (status: number, headers: Record<string, unknown>, stream: NodeJS.ReadableStream) => {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.once("error", reject);
      return (more: Record<string, unknown> = {}) =>
        resolve({ status, headers: { ...headers, ...more }, body: Buffer.concat(chunks) });
    };
    if (req.http === "h1") {
      const r = http.request(url, { method: req.method, headers: req.headers }, (res) => {
        res.once("end", collect(res.statusCode ?? 0, res.headers, res));
      });
      r.once("error", reject);
      r.end(req.body);
      return;
    }
    const session = http2.connect(url.origin);
    session.once("error", reject);
    const stream = session.request({
      ":method": req.method,
      ":path": `${url.pathname}${url.search}`,
      ...req.headers,
    });
    stream.once("response", (headers) => {
      let trailers: Record<string, unknown> = {};
      stream.once("trailers", (t) => {
        trailers = t;
      });
      const done = collect(Number(headers[":status"]), headers, stream);
      stream.once("end", () => {
        done(trailers);
        session.close();
      });
    });
    stream.once("error", reject);
    stream.end(req.body);
  });
}

/**
 * One call before the load, so a row that only ever fails (a refused token, a wrong content type)
 * is not mistaken for a fast one: the answer must be a success in its protocol's terms and carry
 * the user's email. Returns the answer's body length, which the load then expects of every answer.
 */
async function probe(name: string, req: Omit<NativeRequest, "answerBytes">, email: string): Promise<number> {
  const a = await send(req);
  const type = String(req.headers["content-type"] ?? "");
  const grpcStatus = type.startsWith("application/grpc-web")
    ? /grpc-status:\s*(\d+)/.exec(a.body.toString("latin1"))?.[1]
    : type.startsWith("application/grpc")
      ? String(a.headers["grpc-status"])
      : "0";
  if (a.status !== 200 || grpcStatus !== "0" || !a.body.includes(email)) {
    throw new Error(
      `${name}: probe failed: HTTP ${a.status}, grpc-status ${grpcStatus}, body ${a.body.toString("latin1").slice(0, 300)}`,
    );
  }
  return a.body.length;
}

interface Row {
  path: string;
  protocol: Protocol;
  url: string;
  /** The process the request passes through on its way to the user service (none when direct). */
  hop?: number;
}

/** A row's figures, pooled over the rounds: CPU in seconds per 1,000 good answers. */
interface Measured extends Row {
  result: LoadResult;
  cpuPer1k: Record<string, number>;
}

/** Measures GetMe on every path and prints the table and how it fares against issue 8's targets. */
export async function gatewayBench(ctx: GatewayBenchContext): Promise<void> {
  ensureLoadTools();
  const nginx = await startNginx(ctx.user.addr);
  ctx.onClose(() => nginx.stop());
  // The floor over HTTP/2 and over HTTP/1.1: connect-node serves one or the other on a port.
  const forwarders = await Promise.all(
    ["2", "1.1"].map((version) =>
      ctx.startServer("bench/servers/naive-forwarder.ts", {
        USER_URL: `http://${ctx.user.addr}`,
        HTTP: version,
      }),
    ),
  );
  const [fwd2, fwd1] = forwarders as [StartedProcess, StartedProcess];
  // The Node floor: what a bare node:http2 hop costs, with none of the gateway's work, over the
  // raw stream API and over the request/response objects the gateway uses.
  const [bare, bareCompat] = (await Promise.all(
    ["stream", "compat"].map((api) =>
      ctx.startServer("bench/servers/bare-proxy.ts", { USER_ADDR: ctx.user.addr, API: api }),
    ),
  )) as [StartedProcess, StartedProcess];

  const local = (port: number) => `http://127.0.0.1:${port}`;
  const rows: Row[] = [
    { path: "direct (grpc-js)", protocol: "gRPC", url: `http://${ctx.user.addr}` },
    { path: "nginx grpc_pass", protocol: "gRPC", url: local(nginx.port), hop: nginx.pid },
    { path: "naive forwarder", protocol: "gRPC", url: local(fwd2.port), hop: fwd2.pid },
    { path: "naive forwarder", protocol: "Connect JSON/1.1", url: local(fwd1.port), hop: fwd1.pid },
    { path: "bare Node HTTP/2 proxy", protocol: "gRPC", url: local(bare.port), hop: bare.pid },
    {
      path: "bare Node HTTP/2 proxy, compat API",
      protocol: "gRPC",
      url: local(bareCompat.port),
      hop: bareCompat.pid,
    },
    ...(
      ["gRPC", "gRPC-web", "Connect binary", "Connect JSON", "Connect JSON/1.1", "Connect GET/1.1"] as const
    ).map((protocol) => ({ path: "gateway", protocol, url: ctx.gateway.url, hop: ctx.gateway.pid })),
  ];
  const plans = await Promise.all(
    rows.map(async (row) => {
      const name = `${row.path}, ${row.protocol}`;
      const req = request(row.protocol, row.url, ctx.token);
      const answerBytes = await probe(name, req, ctx.email);
      const h2 = req.http === "h2";
      const load = {
        ...ctx.load,
        connections: h2 ? H2_CONNECTIONS : H1_CONNECTIONS,
        streams: h2 ? H2_STREAMS : 1,
        pids: { user: ctx.user.pid, ...(row.hop === undefined ? {} : { hop: row.hop }) },
      };
      return { row, name, req: { ...req, answerBytes }, load };
    }),
  );
  // One untimed pass over every row first: the user service's GetMe path is cold until the
  // first row has run, and without this the first row (direct) came out below nginx's in most
  // quick runs.
  for (const { name, req, load } of plans)
    await nativeLoad(name, req, { ...load, durationMs: load.warmupMs });
  // CPU seconds per row and process, summed over the rounds.
  const cpu = rows.map(() => new Map<string, number>());
  const results = await interleaved(
    ctx.rounds,
    plans.map(({ name, req, load }, i) => ({
      name,
      run: async () => {
        const { result, cpuSeconds } = await nativeLoad(name, req, load);
        const spent = cpu[i] as Map<string, number>;
        for (const [p, s] of Object.entries(cpuSeconds)) spent.set(p, (spent.get(p) ?? 0) + s);
        return result;
      },
    })),
  );
  const checks: string[] = [];
  printTable(
    rows.map((row, i) => {
      const result = results[i] as LoadResult;
      const per1k = (s: number) => (result.requests > 0 ? (s / result.requests) * 1000 : Number.NaN);
      return {
        ...row,
        result,
        cpuPer1k: Object.fromEntries([...(cpu[i] ?? [])].map(([p, s]) => [p, per1k(s)])),
      };
    }),
    ctx,
    checks,
  );

  // With as many requests in flight, a slower hop's latency is mostly its queue: the same p99
  // target compared there says little more than the throughput does. So latency is also compared
  // at one offered rate, half what the slowest of these rows sustained, where every hop keeps
  // up and its p99 is what it adds to a call. h2load only (wrk has no fixed rate).
  const paced = plans.filter(
    (p, i) =>
      p.req.http === "h2" && rows[i]?.path !== "naive forwarder" && !rows[i]?.path.startsWith("bare Node"),
  );
  const rate = 0.5 * Math.min(...paced.map((p) => results[plans.indexOf(p)]?.rps ?? 0));
  // Long enough for about 1,000 answers (a p99 over fewer is the slowest handful), within 3 rows' time.
  const durationMs = Math.round(
    Math.min(3 * ctx.load.durationMs, Math.max(ctx.load.durationMs, (1_000 / rate) * 1_000)),
  );
  const atRate: LoadResult[] = [];
  for (const p of paced) {
    atRate.push((await nativeLoad(p.name, p.req, { ...p.load, durationMs, rate })).result);
    console.error(`measured: ${p.name} at ${rate.toFixed(0)} requests/s`);
  }
  printRateTable(
    paced.map((p, i) => ({ ...p.row, result: atRate[i] as LoadResult })),
    rate,
    durationMs,
    checks,
  );
  console.log(`\nissue 8's targets:\n${checks.join("\n")}`);
}

// Issue 8's targets, per gateway protocol.
const TARGETS: Record<Protocol, { vsNginx?: number; vsDirect?: number; cpuVsUser?: number }> = {
  gRPC: { vsNginx: 0.8, vsDirect: 0.7, cpuVsUser: 0.5 },
  "gRPC-web": { vsNginx: 0.8, vsDirect: 0.7, cpuVsUser: 0.5 },
  "Connect binary": { cpuVsUser: 0.5 },
  "Connect JSON": { vsDirect: 0.5 },
  "Connect JSON/1.1": { vsDirect: 0.5 },
  "Connect GET/1.1": {},
};
const P99_VS_NGINX = 1.5;

const x = (v: number) => `${v.toFixed(2)}×`;
const ratio = (a: number, b: number | undefined) => (b ? a / b : Number.NaN);

/** Adds a target's line to `checks` and returns the target as the table shows it. */
function checker(checks: string[]) {
  return (what: string, value: number, target: number, atMost = false) => {
    const met = atMost ? value <= target : value >= target;
    checks.push(`- ${what}: ${x(value)} (target ${atMost ? "≤" : "≥"} ${target}) ${met ? "met" : "MISSED"}`);
    return `${atMost ? "≤" : "≥"}${target}`;
  };
}

function printTable(rows: Measured[], ctx: GatewayBenchContext, checks: string[]): void {
  const direct = rows[0]?.result;
  const nginx = rows[1]?.result;
  const cpu = (row: Measured, p: string) => row.cpuPer1k[p]?.toFixed(3) ?? "";
  const check = checker(checks);

  console.log(
    `\n## GetMe with a token check, native load (h2load: ${H2_CONNECTIONS} connections × ${H2_STREAMS} streams; wrk: ${H1_CONNECTIONS} connections), ${ctx.rounds} × ${ctx.load.durationMs / 1000} s each, rounds interleaved\n`,
  );
  console.log(
    "| path | protocol | requests | errors | rps | × direct | × nginx | p50 ms | p99 ms | p99 × nginx | hop CPU s/1k | user CPU s/1k | hop ÷ user CPU | targets |",
  );
  console.log("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
  const notes: string[] = [];
  for (const row of rows) {
    const r = row.result;
    const vsDirect = ratio(r.rps, direct?.rps);
    const vsNginx = ratio(r.rps, nginx?.rps);
    const p99VsNginx = ratio(r.p99Ms, nginx?.p99Ms);
    const hopVsUser = ratio(row.cpuPer1k.hop ?? Number.NaN, row.cpuPer1k.user);
    const targets: string[] = [];
    if (row.path === "gateway") {
      const t = TARGETS[row.protocol];
      const what = `gateway ${row.protocol}`;
      // The floor, in the protocols both speak: the bench has always held the gateway to beating it.
      const floor = rows.find((f) => f.path === "naive forwarder" && f.protocol === row.protocol)?.result;
      if (floor)
        targets.push(`rps ${check(`${what} rps / naive forwarder`, ratio(r.rps, floor.rps), 1)} floor`);
      if (t.vsNginx) targets.push(`rps ${check(`${what} rps / nginx`, vsNginx, t.vsNginx)} nginx`);
      if (t.vsDirect) targets.push(`rps ${check(`${what} rps / direct`, vsDirect, t.vsDirect)} direct`);
      if (t.cpuVsUser)
        targets.push(`CPU ${check(`${what} CPU / user's`, hopVsUser, t.cpuVsUser, true)} user`);
      // HTTP/2 rows are held to it at one rate (the next table); wrk can only load at full tilt.
      if (row.protocol.endsWith("/1.1"))
        targets.push(
          `p99 ${check(`${what} p99 / nginx's (full load)`, p99VsNginx, P99_VS_NGINX, true)} nginx`,
        );
      else targets.push(`p99: next table`);
    }
    if (r.firstError) notes.push(`- ${r.name}: first error: ${r.firstError}`);
    console.log(
      `| ${row.path} | ${row.protocol} | ${r.requests} | ${r.errors} | ${r.rps.toFixed(0)} | ${x(vsDirect)} | ${x(vsNginx)} | ${r.p50Ms.toFixed(2)} | ${r.p99Ms.toFixed(2)} | ${x(p99VsNginx)} | ${cpu(row, "hop")} | ${cpu(row, "user")} | ${Number.isNaN(hopVsUser) ? "" : x(hopVsUser)} | ${targets.join(", ")} |`,
    );
  }
  if (notes.length > 0) console.log(`\n${notes.join("\n")}`);
}

function printRateTable(
  rows: (Row & { result: LoadResult })[],
  rate: number,
  durationMs: number,
  checks: string[],
) {
  const nginx = rows.find((r) => r.path === "nginx grpc_pass")?.result;
  const check = checker(checks);
  console.log(
    `\n## GetMe at one offered rate, ${rate.toFixed(0)} requests/s (HTTP/2 rows), ${(durationMs / 1000).toFixed(1)} s each\n`,
  );
  console.log("| path | protocol | requests | errors | rps | p50 ms | p99 ms | p99 × nginx | target |");
  console.log("|---|---|--:|--:|--:|--:|--:|--:|---|");
  for (const row of rows) {
    const r = row.result;
    const p99VsNginx = ratio(r.p99Ms, nginx?.p99Ms);
    const target =
      row.path === "gateway"
        ? `p99 ${check(`gateway ${row.protocol} p99 / nginx's at ${rate.toFixed(0)}/s`, p99VsNginx, P99_VS_NGINX, true)} nginx`
        : "";
    console.log(
      `| ${row.path} | ${row.protocol} | ${r.requests} | ${r.errors} | ${r.rps.toFixed(0)} | ${r.p50Ms.toFixed(2)} | ${r.p99Ms.toFixed(2)} | ${x(p99VsNginx)} | ${target} |`,
    );
  }
}
