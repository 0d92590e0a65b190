import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import {
  channelOptions,
  createAccessTokenVerifier,
  createLogger,
  createServiceClient,
  jwksFromAuth,
  type Logger,
  metrics,
} from "@protomesh/platform";
import { service as healthService } from "grpc-health-check";
import type { JSONWebKeySet } from "jose";
import type { GatewayConfig } from "./config.ts";
import { createDualServer, handleCors, stampRequest } from "./http.ts";
import { authInterceptor, forwardRoutes, observeInterceptor } from "./routes.ts";
import { upstreamServices } from "./upstreams.ts";

const HealthClient = grpc.makeGenericClientConstructor(healthService, "Health");
const check = healthService.Check as grpc.MethodDefinition<object, unknown>;

/** A running gateway. */
export interface RunningGateway {
  port: number;
  url: string;
  stop(): Promise<void>;
}

/** Caches a fetch for a while, sharing one in-flight request among concurrent callers. */
function cached<T>(fetch: () => Promise<T>, ttlMs: number) {
  let value: { v: T; at: number } | undefined;
  let pending: Promise<T> | undefined;
  return async () => {
    if (value && Date.now() - value.at < ttlMs) return value.v;
    pending ??= fetch()
      .then((v) => {
        value = { v, at: Date.now() };
        return v;
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  };
}

/** Starts the gateway on config.port (0 picks a free port). */
export async function startGateway(
  config: GatewayConfig,
  log: Logger = createLogger("gateway", config.logLevel),
) {
  const authAddr = config.upstreams.auth;
  if (!authAddr) throw new Error("the gateway needs the auth upstream");
  const jwksSource = jwksFromAuth(authAddr);
  const jwks = cached<JSONWebKeySet>(jwksSource.fetch, 60_000);
  const verifier = createAccessTokenVerifier({
    fetchJwks: jwksSource.fetch,
    issuer: config.tokenIssuer,
    audience: config.tokenAudience,
  });
  const upstreams = upstreamServices.map((u) => {
    const addr = config.upstreams[u.name] ?? "";
    return {
      ...u,
      client: createServiceClient(u.service, addr) as unknown as Record<string, unknown> & { close(): void },
      health: new HealthClient(addr, grpc.credentials.createInsecure(), channelOptions),
    };
  });

  // Ready when every upstream reports SERVING over grpc.health.v1.
  const ready = cached(async () => {
    const checks = upstreams.map(
      (u) =>
        new Promise<boolean>((resolve) =>
          u.health.makeUnaryRequest(
            "/grpc.health.v1.Health/Check",
            (m: object) => check.requestSerialize(m),
            (b: Buffer) => check.responseDeserialize(b) as { status: string },
            { service: "" },
            { deadline: Date.now() + 1_000 },
            (err, res) => resolve(!err && res?.status === "SERVING"),
          ),
        ),
    );
    return (await Promise.all(checks)).every(Boolean);
  }, 1_000);

  const shutdown = new AbortController();
  const connect = connectNodeAdapter({
    routes: forwardRoutes(upstreams, { defaultMs: config.defaultTimeoutMs, maxMs: config.maxTimeoutMs }),
    interceptors: [observeInterceptor(log, config.accessLog), authInterceptor(verifier)],
    readMaxBytes: config.maxRequestBytes,
    maxTimeoutMs: config.maxTimeoutMs,
    shutdownSignal: shutdown.signal,
  });

  const { server, close } = createDualServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    // HEAD answers like GET; both http servers leave out the body by themselves.
    if (req.method === "GET" || req.method === "HEAD") {
      if (path === "/healthz") return void res.writeHead(200, { "content-type": "text/plain" }).end("ok");
      if (path === "/readyz") {
        return void ready().then((ok) =>
          res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(ok ? "ready" : "not ready"),
        );
      }
      if (path === "/metrics") {
        return void metrics
          .metrics()
          .then((body) => res.writeHead(200, { "content-type": metrics.contentType }).end(body));
      }
      if (path === "/.well-known/jwks.json") {
        return void jwks().then(
          (set) =>
            res
              .writeHead(200, {
                "content-type": "application/jwk-set+json",
                "cache-control": "public, max-age=60",
              })
              .end(JSON.stringify(set)),
          () => res.writeHead(503).end(),
        );
      }
    }
    if (handleCors(req, res, config.corsOrigins)) return;
    stampRequest(req, res);
    connect(req as never, res as never);
  }, config.connections);

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, resolve);
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  log.info({ port }, "gateway listening");

  return {
    port,
    url: `http://${config.host === "0.0.0.0" ? "127.0.0.1" : config.host}:${port}`,
    async stop() {
      close();
      const drained = new Promise<void>((resolve) => server.once("close", () => resolve()));
      const timer = setTimeout(() => shutdown.abort(), config.shutdownTimeoutMs);
      await drained;
      clearTimeout(timer);
      for (const u of upstreams) {
        u.client.close();
        u.health.close();
      }
      jwksSource.close();
      log.info("gateway stopped");
    },
  } satisfies RunningGateway;
}
