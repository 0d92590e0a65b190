// `npm run bench`: GetMe through the gateway against its baselines (direct, nginx, a naive
// forwarder) under native load, and idle streams through it; how long code mails take; sign-in
// throughput against the hashing limit, and GetMe while sign-ins saturate auth; and, when the
// mesh has catalog and orders, PlaceOrder against the raw stock decrement and GET reads with the
// gateway's cache on and off; and chat: thousands of Subscribe streams through the gateway, one
// message to each user, against a bare grpc-js server, and across two chat replicas.
// Everything runs on this machine in one go (services as separate processes, the load from this
// one or from h2load and wrk), so the ratios hold on a noisy 2-core box even when the absolute
// numbers do not.
// Every load loop is bounded by both a duration and a request count.
import { availableParallelism, loadavg } from "node:os";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { freePort, startNats, startPostgres, startSmtp } from "@protomesh/devkit";
import { addressVariable, meshServices, randomSecrets, type ServiceName } from "@protomesh/mesh";
import { chatBench } from "./lib/chat.ts";
import { connectJsonClient } from "./lib/clients.ts";
import { commerceBench, hasCommerce } from "./lib/commerce.ts";
import { gatewayBench } from "./lib/gateway.ts";
import { GC_ON_SIGNAL } from "./lib/grpc-streams.ts";
import { identityBench, signIn } from "./lib/identity.ts";
import { type StartedProcess, startProcess } from "./lib/procs.ts";
import { streamsBench } from "./lib/streams.ts";

const quick = process.argv.includes("--quick");
// `--only=gateway` runs the gateway's GetMe tables and streams alone (`--only=streams`: the
// streams alone); `--only=commerce` skips it and the identity part;
// `--only=orders` also skips the catalog reads, leaving the stock decrement and PlaceOrder
// (about a minute with --quick); `--only=chat` runs the chat part alone (one to two minutes
// with --quick, seven with 10,000 streams on a loaded 2-core machine).
const only = process.argv.find((a) => a.startsWith("--only="))?.slice("--only=".length);
if (only !== undefined && !["gateway", "streams", "commerce", "orders", "chat"].includes(only)) {
  throw new Error(`--only=${only}: expected gateway, streams, commerce, orders or chat`);
}
// `--chat-streams=N`: the chat part with N users' streams instead of 10,000 (2,000 with --quick).
const chatStreamsArg = process.argv
  .find((a) => a.startsWith("--chat-streams="))
  ?.slice("--chat-streams=".length);
const chatStreams = chatStreamsArg === undefined ? undefined : Number(chatStreamsArg);
if (chatStreams !== undefined && !(Number.isInteger(chatStreams) && chatStreams > 0)) {
  throw new Error(`--chat-streams=${chatStreamsArg}: expected a positive integer`);
}
const DURATION_MS = quick ? 2_000 : 6_000;
const WARMUP_MS = quick ? 500 : 1_500;
const MAX_REQUESTS = 300_000;
const CONCURRENCY = 32;
const BCRYPT_COST = 10;
// One bcrypt thread per core: the hashing limit assumes every core can hash.
const cores = availableParallelism();
const runId = Date.now().toString(36);
const PASSWORD = "correct horse battery";

const procs: StartedProcess[] = [];
const closers: Array<() => unknown> = [];
const infra: Array<{ stop(): Promise<void> }> = [];

// The machine may be shared: its load says how far to trust the absolute figures.
const load1 = () => loadavg()[0]?.toFixed(1);
console.log(
  `# npm run bench${quick ? " --quick" : ""}: ${cores} cores, load average ${load1()} at the start`,
);

try {
  const [pg, nats, smtp] = await Promise.all([startPostgres(), startNats(), startSmtp()]);
  infra.push(pg, nats, smtp);
  const ports = {} as Record<ServiceName | "gateway", number>;
  const metrics = {} as Record<ServiceName, number>;
  for (const svc of meshServices) {
    ports[svc.name] = await freePort();
    metrics[svc.name] = await freePort();
  }
  ports.gateway = await freePort();
  const secret = randomSecrets();
  const common = {
    HOST: "127.0.0.1",
    // Heap per stream is read after a full collection, which SIGUSR2 asks for.
    NODE_OPTIONS: [process.env.NODE_OPTIONS, GC_ON_SIGNAL].filter(Boolean).join(" "),
    NATS_URL: nats.url,
    GATEWAY_SECRET: secret("GATEWAY_SECRET"),
    LOG_LEVEL: "warn",
    ...Object.fromEntries(
      meshServices.map((svc) => [addressVariable(svc.name), `127.0.0.1:${ports[svc.name]}`]),
    ),
  };
  // auth hashes on every core. Its bound on bcrypt jobs per client address is lifted as the
  // gateway's rate limits are below: every storm comes from this one address.
  const authTuning = {
    BCRYPT_COST: String(BCRYPT_COST),
    BCRYPT_THREADS: String(cores),
    HASH_QUEUE_PER_CLIENT: "1000",
  };
  // Whose CPU time the gateway table reads.
  const pids = {} as Record<ServiceName | "gateway", number>;
  const started = (name: ServiceName | "gateway", p: StartedProcess) => {
    procs.push(p);
    pids[name] = p.pid;
  };
  // Kept: the chat part starts a second chat replica, and signs tokens as auth does.
  const envOf = {} as Record<ServiceName, Record<string, string>>;
  for (const svc of meshServices) {
    envOf[svc.name] = {
      ...common,
      MESH_SECRET: secret("MESH_SECRET"),
      ...svc.devEnv?.({ smtpUrl: smtp.url, secret }),
      ...(svc.name === "auth" ? authTuning : {}),
      PORT: String(ports[svc.name]),
      METRICS_PORT: String(metrics[svc.name]),
      DATABASE_URL: await pg.createDatabase(`protomesh_${svc.name}`),
      LOG_LEVEL: "info",
    };
    started(svc.name, await startProcess(`services/${svc.name}/src/main.ts`, envOf[svc.name]));
  }
  // Access logs off: this measures the request path, not stdout. Rate limits stay on (their
  // cost is part of every request) but far above what one machine sends: the storms below come
  // from one address and one user, and default limits would refuse most of them by design.
  const highLimits = {
    RATE_LIMIT_IP_PER_MINUTE: "100000000",
    RATE_LIMIT_USER_PER_MINUTE: "100000000",
    RATE_LIMIT_STRICT_IP_PER_MINUTE: "100000000",
    RATE_LIMIT_STRICT_USER_PER_MINUTE: "100000000",
    // Stream limits far above the streams part's (up to 10,000 of one user) and the chat
    // part's (one per user, up to 10,000): the defaults (10 per user) would refuse them.
    STREAMS_PER_USER: "1000000",
    MAX_STREAMS: "1000000",
  };
  started(
    "gateway",
    await startProcess("gateway/src/main.ts", {
      ...common,
      ...highLimits,
      PORT: String(ports.gateway),
      ACCESS_LOG: "off",
      LOG_LEVEL: "info",
    }),
  );
  const gateway = `http://127.0.0.1:${ports.gateway}`;
  const auth = createClient(AuthService, createConnectTransport({ baseUrl: gateway, httpVersion: "1.1" }));
  const email = `bench-${runId}@example.com`;
  await auth.signUp({ email, password: PASSWORD, displayName: "Bench" });
  const token = await signIn(auth, email, PASSWORD);
  const headers = { authorization: `Bearer ${token}` };
  const serviceProcess = (name: ServiceName) => ({
    addr: `127.0.0.1:${ports[name]}`,
    pid: pids[name],
    metricsUrl: `http://127.0.0.1:${metrics[name]}/metrics`,
  });
  const streamsRun = (streams: number) => ({
    gateway: { url: gateway, pid: pids.gateway },
    meshSecret: secret("MESH_SECRET"),
    streams,
  });
  const budget = { durationMs: DURATION_MS, warmupMs: WARMUP_MS, maxRequests: MAX_REQUESTS };
  // A part's own server (a baseline, a forwarder), stopped with the rest of the run.
  const startServer = async (entry: string, env: Record<string, string>) => {
    const started = await startProcess(entry, env);
    procs.push(started);
    return started;
  };

  if (only === undefined || only === "gateway") {
    await gatewayBench({
      token,
      email,
      user: { addr: `127.0.0.1:${ports.user}`, pid: pids.user },
      gateway: { url: gateway, pid: pids.gateway },
      startServer,
      load: budget,
      rounds: quick ? 1 : 2,
      onClose: (close) => closers.push(close),
    });
  }
  if (only === undefined || only === "gateway" || only === "streams") {
    await streamsBench({
      ...streamsRun(quick ? 1_000 : 10_000),
      notify: serviceProcess("notify"),
      token,
      email,
      startServer,
    });
  }
  if (only === undefined || only === "chat") {
    await chatBench({
      ...streamsRun(chatStreams ?? (quick ? 2_000 : 10_000)),
      chat: serviceProcess("chat"),
      userAddr: `127.0.0.1:${ports.user}`,
      authEnv: envOf.auth,
      startChatReplica: async () => {
        const replica = await startProcess("services/chat/src/main.ts", {
          ...envOf.chat,
          PORT: "0",
          METRICS_PORT: "0",
        });
        procs.push(replica);
        return replica;
      },
      startServer,
      runId,
      crossMessages: quick ? 100 : 200,
    });
  }
  if (only === undefined) {
    const getMe = connectJsonClient(gateway, { headers });
    closers.push(() => getMe.close());
    await identityBench({
      auth,
      smtp,
      getMe,
      authMetricsUrl: `http://127.0.0.1:${metrics.auth}/metrics`,
      authDatabaseUrl: await pg.createDatabase("protomesh_auth"),
      cores,
      bcryptCost: BCRYPT_COST,
      rounds: quick ? 1 : 3,
      mailSamples: quick ? 8 : 20,
      load: budget,
      runId,
      password: PASSWORD,
      onClose: (close) => closers.push(close),
    });
  }

  if (only === "gateway" || only === "streams" || only === "chat") {
    // Those figures only.
  } else if (hasCommerce(meshServices)) {
    await commerceBench({
      gatewayUrl: gateway,
      startGateway: async (env) => {
        const extra = await startProcess("gateway/src/main.ts", {
          ...common,
          ...highLimits,
          ...env,
          PORT: "0",
          ACCESS_LOG: "off",
          LOG_LEVEL: "info",
        });
        procs.push(extra);
        return `http://127.0.0.1:${extra.port}`;
      },
      catalogAddr: `127.0.0.1:${(ports as Record<string, number>).catalog}`,
      meshSecret: secret("MESH_SECRET"),
      smtp,
      createDatabase: (name) => pg.createDatabase(name),
      load: budget,
      readConcurrency: CONCURRENCY,
      rounds: quick ? 1 : 2,
      reads: only !== "orders",
      runId,
      password: PASSWORD,
      onClose: (close) => closers.push(close),
    });
  } else {
    console.log("\n## Commerce\n\nskipped: catalog/orders not in the mesh");
  }
  console.log(`\nload average ${load1()} at the end`);
} finally {
  await Promise.allSettled(closers.map(async (close) => close()));
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(infra.map((s) => s.stop()));
}
