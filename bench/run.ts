// `npm run bench`: the gateway against its baselines, then GetMe while sign-ins saturate auth.
// Everything runs on this machine in one go (services as separate processes, the load from this
// one), so the ratios hold on a noisy 2-core box even when the absolute numbers do not.
// Every load loop is bounded by both a duration and a request count.
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { freePort, startNats, startPostgres, startSmtp } from "@protomesh/devkit";
import { addressVariable, meshServices, randomSecrets, type ServiceName } from "@protomesh/mesh";
import {
  connectGrpcClient,
  connectJsonClient,
  type GetMeCall,
  grpcJsClient,
  grpcWebClient,
} from "./lib/clients.ts";
import { formatTable, type LoadResult, runLoad } from "./lib/load.ts";
import { type StartedProcess, startProcess } from "./lib/procs.ts";

const quick = process.argv.includes("--quick");
const DURATION_MS = quick ? 2_000 : 6_000;
const WARMUP_MS = quick ? 500 : 1_500;
const MAX_REQUESTS = 300_000;
const CONCURRENCY = 32;

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
  for (const svc of meshServices) {
    procs.push(
      await startProcess(`services/${svc.name}/src/main.ts`, {
        ...common,
        MESH_SECRET: secret("MESH_SECRET"),
        ...svc.devEnv?.({ smtpUrl: smtp.url, secret }),
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
  const email = `bench-${Date.now()}@example.com`;
  const password = "correct horse battery";
  await auth.signUp({ email, password, displayName: "Bench" });
  const { result } = await auth.signIn({ email, password });
  if (result.case !== "tokens") throw new Error("the bench account must sign in without MFA");
  const headers = { authorization: `Bearer ${result.value.accessToken}` };

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

  // GetMe latency at rest and during a sign-in storm, at a modest fixed concurrency.
  const getMe = client(connectJsonClient(gateway, { headers }));
  const authMetrics = `http://127.0.0.1:${metrics.auth}/metrics`;
  const lag = () => gauge(authMetrics, "nodejs_eventloop_lag_p99_seconds");
  await lag(); // prom-client resets the histogram on each read: start a fresh window
  const rest = await load("GetMe at rest (gateway, Connect JSON, c=4)", getMe, 4);
  const lagRest = await lag();
  const signIn = () => auth.signIn({ email, password });
  const [storm, during] = await Promise.all([
    runLoad({
      name: "SignIn storm (c=16)",
      concurrency: 16,
      durationMs: DURATION_MS,
      maxRequests: 50_000,
      call: signIn,
    }),
    load("GetMe during the storm (c=4)", getMe, 4),
  ]);
  const lagStorm = await lag();
  console.log("\n## Sign-in storm\n");
  console.log(formatTable([rest, during, storm], rest.name));
  console.log(`\nSignIn throughput: ${storm.rps.toFixed(0)}/s (bcrypt cost 10, BCRYPT_THREADS=1)`);
  console.log(
    `GetMe p99 during storm / at rest: ${(during.p99Ms / rest.p99Ms).toFixed(2)}× (target ≤ 1.50); ` +
      `auth event-loop lag p99: ${(lagRest * 1000).toFixed(1)} ms at rest, ${(lagStorm * 1000).toFixed(1)} ms during the storm`,
  );
} finally {
  for (const close of closers) close();
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(infra.map((s) => s.stop()));
}
