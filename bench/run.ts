// `npm run bench`: the gateway against its baselines; how long code mails take; sign-in
// throughput against the hashing limit, and GetMe while sign-ins saturate auth; and, when the
// mesh has catalog and orders, PlaceOrder against the raw stock decrement and GET reads with the
// gateway's cache on and off.
// Everything runs on this machine in one go (services as separate processes, the load from this
// one), so the ratios hold on a noisy 2-core box even when the absolute numbers do not.
// Every load loop is bounded by both a duration and a request count.
import { availableParallelism, loadavg } from "node:os";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { freePort, type ReceivedMail, startNats, startPostgres, startSmtp } from "@protomesh/devkit";
import { addressVariable, meshServices, randomSecrets, type ServiceName } from "@protomesh/mesh";
import { MAIL } from "@protomesh/testkit";
import { Client as PgClient } from "pg";
import {
  connectGrpcClient,
  connectJsonClient,
  type GetMeCall,
  grpcJsClient,
  grpcWebClient,
} from "./lib/clients.ts";
import { commerceBench, hasCommerce } from "./lib/commerce.ts";
import { bcryptCompares, formatMailTable, mailLatency, median, signIn } from "./lib/identity.ts";
import { formatTable, type LoadResult, pooled, runLoad } from "./lib/load.ts";
import { type StartedProcess, startProcess } from "./lib/procs.ts";

const quick = process.argv.includes("--quick");
const DURATION_MS = quick ? 2_000 : 6_000;
const WARMUP_MS = quick ? 500 : 1_500;
const MAX_REQUESTS = 300_000;
const CONCURRENCY = 32;
// Sign-in storm: enough sign-ins in flight to keep every hashing thread busy.
const STORM_CONCURRENCY = 8;
const GETME_CONCURRENCY = 4;
const ROUNDS = quick ? 1 : 3;
// Each sample signs up an account; the storm needs one account per worker.
const MAIL_SAMPLES = Math.max(STORM_CONCURRENCY, quick ? 8 : 20);
const BCRYPT_SAMPLES = 10; // per round
const BCRYPT_COST = 10;
// One bcrypt thread per core: the hashing limit assumes every core can hash.
const cores = availableParallelism();
const runId = Date.now().toString(36);
const PASSWORD = "correct horse battery";
// The storm starts with its own warm-up, whose queued sign-ins drain before it measures: GetMe
// starts measuring this much later, and the storm goes on this much longer, so that GetMe's
// whole window falls inside a full storm.
const STORM_SETTLE_MS = 1_500;

const procs: StartedProcess[] = [];
const closers: Array<() => unknown> = [];
const infra: Array<{ stop(): Promise<void> }> = [];

/** Reads one gauge from a Prometheus text endpoint. */
async function gauge(url: string, name: string): Promise<number> {
  const text = await (await fetch(url)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return Number(line?.split(" ").pop() ?? Number.NaN);
}

const load = (name: string, call: () => Promise<unknown>, concurrency = CONCURRENCY) =>
  runLoad({
    name,
    concurrency,
    durationMs: DURATION_MS,
    warmupMs: WARMUP_MS,
    maxRequests: MAX_REQUESTS,
    call,
  });

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
  for (const svc of meshServices) {
    procs.push(
      await startProcess(`services/${svc.name}/src/main.ts`, {
        ...common,
        MESH_SECRET: secret("MESH_SECRET"),
        ...svc.devEnv?.({ smtpUrl: smtp.url, secret }),
        ...(svc.name === "auth" ? authTuning : {}),
        PORT: String(ports[svc.name]),
        METRICS_PORT: String(metrics[svc.name]),
        DATABASE_URL: await pg.createDatabase(`protomesh_${svc.name}`),
        LOG_LEVEL: "info",
      }),
    );
  }
  // Access logs off: this measures the request path, not stdout. Rate limits stay on (their
  // cost is part of every request) but far above what one machine sends: the storms below come
  // from one address and one user, and default limits would refuse most of them by design.
  const highLimits = {
    RATE_LIMIT_IP_PER_MINUTE: "100000000",
    RATE_LIMIT_USER_PER_MINUTE: "100000000",
    RATE_LIMIT_STRICT_IP_PER_MINUTE: "100000000",
    RATE_LIMIT_STRICT_USER_PER_MINUTE: "100000000",
  };
  procs.push(
    await startProcess("gateway/src/main.ts", {
      ...common,
      ...highLimits,
      PORT: String(ports.gateway),
      ACCESS_LOG: "off",
      LOG_LEVEL: "info",
    }),
  );
  const echo = await startProcess("bench/servers/echo.ts", {});
  const forwarder = await startProcess("bench/servers/naive-forwarder.ts", {
    ECHO_URL: `http://127.0.0.1:${echo.port}`,
  });
  // The same gateway code routed to the echo: compares the two forwarders on equal footing.
  const gatewayToEcho = await startProcess("gateway/src/main.ts", {
    ...common,
    ...highLimits,
    PORT: "0",
    USER_ADDR: `127.0.0.1:${echo.port}`,
    ACCESS_LOG: "off",
    LOG_LEVEL: "info",
  });
  procs.push(echo, forwarder, gatewayToEcho);

  const gateway = `http://127.0.0.1:${ports.gateway}`;
  const auth = createClient(AuthService, createConnectTransport({ baseUrl: gateway, httpVersion: "1.1" }));
  const email = `bench-${runId}@example.com`;
  await auth.signUp({ email, password: PASSWORD, displayName: "Bench" });
  const headers = { authorization: `Bearer ${await signIn(auth, email, PASSWORD)}` };

  const client = (c: GetMeCall) => {
    closers.push(() => c.close());
    return c;
  };
  const targets: [string, GetMeCall][] = [
    ["bare grpc-js echo (ceiling)", client(grpcJsClient(`127.0.0.1:${echo.port}`))],
    [
      "naive connect-node forwarder, Connect JSON/1.1",
      client(connectJsonClient(`http://127.0.0.1:${forwarder.port}`, { headers })),
    ],
    [
      "gateway → echo, Connect JSON/1.1",
      client(connectJsonClient(`http://127.0.0.1:${gatewayToEcho.port}`, { headers })),
    ],
    ["user direct, grpc-js", client(grpcJsClient(`127.0.0.1:${ports.user}`, { headers }))],
    ["gateway, Connect JSON over HTTP/1.1", client(connectJsonClient(gateway, { headers }))],
    ["gateway, gRPC-web over HTTP/1.1", client(grpcWebClient(gateway, { headers }))],
    ["gateway, gRPC over HTTP/2", client(connectGrpcClient(gateway, { headers }))],
  ];
  const results: LoadResult[] = [];
  for (const [name, call] of targets) {
    results.push(await load(name, call));
    console.error(`measured: ${name}`);
  }
  console.log(`\n## GetMe, concurrency ${CONCURRENCY}, ${DURATION_MS / 1000} s each\n`);
  console.log(formatTable(results, targets[0]?.[0]));
  const rps = (i: number) => results[i]?.rps ?? 0;
  console.log(
    `\ngateway → echo / naive forwarder → echo (both Connect JSON): ${(rps(2) / rps(1)).toFixed(2)}× (target ≥ 1.00)`,
  );
  console.log(`gateway → user (Connect JSON) / user direct (grpc-js): ${(rps(4) / rps(3)).toFixed(2)}×`);
  console.log(`gateway → user (gRPC over HTTP/2) / user direct (grpc-js): ${(rps(6) / rps(3)).toFixed(2)}×`);

  // Mail latency first, on a mesh with nothing else to do: each sample is one account signing up
  // (verification code) and then asking for a password reset (reset code), one at a time.
  const accountEmail = (i: number) => `bench-${runId}-${i}@example.com`;
  const mailTo = (subject: string) => (i: number) => (mail: ReceivedMail) =>
    mail.to.includes(accountEmail(i)) && mail.subject === subject;
  const mails = [
    await mailLatency(
      "SignUp answered → verification email",
      smtp,
      MAIL_SAMPLES,
      (i) => auth.signUp({ email: accountEmail(i), password: PASSWORD, displayName: `Bench ${i}` }),
      mailTo(MAIL.verify),
    ),
    await mailLatency(
      "RequestPasswordReset answered → reset email",
      smtp,
      MAIL_SAMPLES,
      (i) => auth.requestPasswordReset({ email: accountEmail(i) }),
      mailTo(MAIL.reset),
    ),
  ];
  console.log(`\n## Mail latency: through the gateway to the SMTP server, one at a time\n`);
  console.log(formatMailTable(mails));
  const medianMs = (i: number) => `${median(mails[i]?.samples ?? []).toFixed(1)} ms`;
  console.log(
    `\nmedian SignUp → verification email: ${medianMs(0)}; RequestPasswordReset → reset email: ${medianMs(1)}`,
  );

  // GetMe latency at rest and during a sign-in storm, at fixed concurrencies, in alternating
  // rounds pooled together, so that a neighbour's load on the machine falls on both sides. Each
  // storm worker signs in its own account: the auth throttle counts sign-ins in flight per
  // account, and real storms come from many accounts.
  const getMe = client(connectJsonClient(gateway, { headers }));
  const authMetrics = `http://127.0.0.1:${metrics.auth}/metrics`;
  const lag = () => gauge(authMetrics, "nodejs_eventloop_lag_p99_seconds");
  const rests: LoadResult[] = [];
  const durings: LoadResult[] = [];
  const storms: LoadResult[] = [];
  const alones: LoadResult[] = [];
  const lags = { rest: 0, storm: 0 };
  const compares: number[] = [];
  const parallel = { compares: 0, seconds: 0 };
  // The previous storm's events (SignedIn, one per sign-in) are still being relayed and mailed
  // for a moment: "at rest" starts once auth's outbox is empty (or after 10 s).
  const authDb = new PgClient({ connectionString: await pg.createDatabase("protomesh_auth") });
  await authDb.connect();
  closers.push(() => authDb.end());
  const outboxDrained = async () => {
    const until = Date.now() + 10_000;
    while (Date.now() < until) {
      const { rows } = await authDb.query<{ n: number }>("SELECT count(*)::int AS n FROM outbox");
      if (rows[0]?.n === 0) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  for (let round = 0; round < ROUNDS; round++) {
    await outboxDrained();
    // The hashing limit, timed before each storm on the idle mesh, so that it sees the same
    // neighbours on the machine as the storm does.
    const bcrypt = await bcryptCompares(BCRYPT_COST, BCRYPT_SAMPLES, cores);
    compares.push(...bcrypt.timesMs);
    parallel.compares += bcrypt.parallel.compares;
    parallel.seconds += bcrypt.parallel.seconds;
    await lag(); // prom-client resets the histogram on each read: start a fresh window
    rests.push(await load(`GetMe at rest, round ${round + 1}`, getMe, GETME_CONCURRENCY));
    lags.rest = Math.max(lags.rest, await lag());
    const signInOwn = (worker: number) => auth.signIn({ email: accountEmail(worker), password: PASSWORD });
    // Throughput with nothing else asking for the CPU, then again with GetMe alongside for its
    // latency (closed-loop GetMe takes CPU from the lower-priority hashing threads by design).
    alones.push(
      await runLoad({
        name: `SignIn storm, round ${round + 1}`,
        concurrency: STORM_CONCURRENCY,
        durationMs: DURATION_MS,
        warmupMs: WARMUP_MS,
        maxRequests: 50_000,
        call: signInOwn,
      }),
    );
    await outboxDrained();
    await lag();
    const [storm, during] = await Promise.all([
      runLoad({
        name: `SignIn storm beside GetMe, round ${round + 1}`,
        concurrency: STORM_CONCURRENCY,
        durationMs: DURATION_MS + STORM_SETTLE_MS,
        warmupMs: WARMUP_MS,
        maxRequests: 50_000,
        call: signInOwn,
      }),
      runLoad({
        name: `GetMe during the storm, round ${round + 1}`,
        concurrency: GETME_CONCURRENCY,
        durationMs: DURATION_MS,
        warmupMs: WARMUP_MS + STORM_SETTLE_MS,
        maxRequests: MAX_REQUESTS,
        call: getMe,
      }),
    ]);
    lags.storm = Math.max(lags.storm, await lag());
    storms.push(storm);
    durings.push(during);
    console.error(`measured: sign-in storm round ${round + 1}`);
  }
  const compareMs = median(compares);
  const hashLimit = (cores * 1000) / compareMs;
  const rest = pooled(`GetMe at rest (gateway, Connect JSON, c=${GETME_CONCURRENCY})`, rests);
  const during = pooled(`GetMe during the storm (c=${GETME_CONCURRENCY})`, durings);
  const alone = pooled(`SignIn storm alone (c=${STORM_CONCURRENCY}, one account per worker)`, alones);
  const storm = pooled(`SignIn storm beside GetMe (c=${STORM_CONCURRENCY})`, storms);
  console.log(
    `\n## Sign-in storm: ${ROUNDS} round(s) of GetMe at rest, the storm alone, the storm with GetMe (${DURATION_MS / 1000} s each), pooled\n`,
  );
  console.log(formatTable([rest, during, alone, storm], rest.name));
  console.log(
    `\nhashing limit: ${cores} cores ÷ ${compareMs.toFixed(1)} ms per bcrypt compare at cost ${BCRYPT_COST} ` +
      `(median of ${compares.length}) = ${hashLimit.toFixed(1)}/s; ` +
      `${cores} threads comparing at once managed ${(parallel.compares / parallel.seconds).toFixed(1)}/s`,
  );
  console.log(
    `SignIn throughput (storm alone): ${alone.rps.toFixed(1)}/s = ${(alone.rps / hashLimit).toFixed(2)}× the hashing limit ` +
      `(target ≥ 0.80; BCRYPT_THREADS=${cores}); beside GetMe: ${storm.rps.toFixed(1)}/s`,
  );
  const perRound = rests.map((r, i) => `${((durings[i]?.p99Ms ?? 0) / r.p99Ms).toFixed(2)}×`).join(", ");
  console.log(
    `GetMe p99 during storm / at rest: ${(during.p99Ms / rest.p99Ms).toFixed(2)}× (target ≤ 1.50; per round ${perRound}); ` +
      `auth event-loop lag p99 (worst window): ${(lags.rest * 1000).toFixed(1)} ms at rest, ${(lags.storm * 1000).toFixed(1)} ms during the storm`,
  );

  if (hasCommerce(meshServices)) {
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
      load: { durationMs: DURATION_MS, warmupMs: WARMUP_MS, maxRequests: MAX_REQUESTS },
      readConcurrency: CONCURRENCY,
      rounds: quick ? 1 : 2,
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
