import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { meshServices } from "@protomesh/mesh";
import {
  connectNats,
  createAccessTokenVerifier,
  createGatewayCredentials,
  createHealthClient,
  createJwksSource,
  createLogger,
  createRevocationList,
  createServiceClient,
  followRevocations,
  type Logger,
  metrics,
} from "@protomesh/platform";
import type { JSONWebKeySet } from "jose";
import type { NatsConnection } from "nats";
import { createResponseCache } from "./cache.ts";
import { createClientAddress } from "./client-address.ts";
import type { GatewayConfig } from "./config.ts";
import { createForwarder, type Route } from "./forward.ts";
import { createDualServer, handleCors, stampRequest } from "./http.ts";
import { createRateLimiter } from "./rate-limits.ts";
import {
  admissionInterceptor,
  createAdmission,
  createObserver,
  createStreamSlots,
  type Exchange,
  exchangeKey,
  forwardRoutes,
  isExposed,
  isStrict,
  observeInterceptor,
} from "./routes.ts";
import { createUpstream } from "./upstream.ts";

/** A running gateway. */
export interface RunningGateway {
  port: number;
  url: string;
  /** True once rate limits are shared with the other replicas through NATS. */
  limitsShared(): boolean;
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
  const jwksSource = createJwksSource(config.authAddr);
  const jwks = cached<JSONWebKeySet>(jwksSource.fetch, 60_000);
  // Revoked sessions are refused here too, not only by the services behind. NATS may be down
  // when the gateway starts: it connects in the background, and until it knows past revocations
  // it refuses to judge tokens (UNAVAILABLE) rather than let a revoked one through.
  const revoked = createRevocationList();
  // Limits are shared through NATS too; until it answers, each replica limits on its own.
  const limiter = createRateLimiter(config.rateLimits, log);
  const stopEvents = new AbortController();
  let natsConnection: NatsConnection | undefined;
  const events = (async () => {
    const { nc, isConnected } = await connectNats(config.natsUrl, "gateway", log, stopEvents.signal);
    natsConnection = nc;
    limiter.attach(nc, isConnected);
    // No JetStream check here: the listener looks streams up, and retries, on every attempt.
    const jsm = await nc.jetstreamManager({ checkAPI: false });
    return followRevocations(revoked, { js: nc.jetstream(), jsm, log });
  })();
  events.catch((err: unknown) => {
    if (!stopEvents.signal.aborted) log.error({ err }, "cannot follow session revocations");
  });
  const verifier = createAccessTokenVerifier({
    fetchJwks: jwksSource.fetch,
    issuer: config.tokenIssuer,
    audience: config.tokenAudience,
    revoked,
  });
  const upstreams = meshServices
    .filter((s) => config.upstreams[s.name])
    .map((s) => {
      const addr = config.upstreams[s.name] ?? "";
      return {
        name: s.name,
        service: s.service,
        client: createServiceClient(s.service, addr) as unknown as Record<string, unknown> & {
          close(): void;
        },
        health: createHealthClient(addr),
        raw: createUpstream(addr),
      };
    });
  const routes = new Map<string, Route>();
  for (const u of upstreams) {
    for (const method of u.service.methods.filter(isExposed)) {
      if (method.methodKind !== "unary" && method.methodKind !== "server_streaming") continue;
      const procedure = `${u.service.typeName}/${method.name}`;
      routes.set(`/${procedure}`, {
        method,
        procedure,
        upstream: u.raw,
        streaming: method.methodKind === "server_streaming",
      });
    }
  }

  // Ready when tokens can be checked and every upstream reports SERVING over grpc.health.v1;
  // otherwise the answer names what is missing.
  void verifier.loadKeys(stopEvents.signal);
  const unready = cached(async () => {
    const health = await Promise.all(upstreams.map((u) => u.health.check("")));
    return [
      ...(verifier.hasKeys() ? [] : ["auth's signing keys not loaded"]),
      ...upstreams.filter((_, i) => health[i] !== "SERVING").map((u) => `${u.name} not serving`),
    ];
  }, 1_000);

  // Unary calls drain until the shutdown timeout, then Connect's shutdown signal cancels what is
  // left (the forwarder ends its streams at once).
  const stopCalls = new AbortController();
  // Responses not yet finished, so a stop can wait for them before closing their connections.
  const inFlight = new Set<Promise<void>>();
  const clientAddress = createClientAddress(config.trustedProxies);
  const exchanges = new WeakMap<object, Exchange>();
  const admit = createAdmission(limiter, verifier);
  const observe = createObserver(log, config.accessLog);
  const timeouts = {
    defaultMs: config.defaultTimeoutMs,
    maxMs: config.maxTimeoutMs,
    maxStreamMs: config.maxStreamTimeoutMs,
  };
  const credentials = createGatewayCredentials(config.gatewaySecret);
  const slots = createStreamSlots(config.streams);
  const forwarder = createForwarder({
    routes,
    admit,
    observe,
    timeouts,
    credentials,
    maxRequestBytes: config.maxRequestBytes,
    maxStreamBufferBytes: config.maxStreamBufferBytes,
    slots,
    log,
  });
  // A misspelt field that silently does nothing is worse than an error naming it; invalid UTF-8
  // is refused as the forwarder refuses it, not stored with U+FFFD. (Connect hands these options
  // to its JSON serialization, which takes a textDecoder; its adapter's type does not say so.)
  const jsonOptions = { ignoreUnknownFields: false, textDecoder: new TextDecoder("utf-8", { fatal: true }) };
  const connect = connectNodeAdapter({
    routes: forwardRoutes(upstreams, timeouts, credentials),
    contextValues: (req) => {
      const values = createContextValues();
      const exchange = exchanges.get(req);
      return exchange ? values.set(exchangeKey, exchange) : values;
    },
    interceptors: [observeInterceptor(observe), admissionInterceptor(admit)],
    readMaxBytes: config.maxRequestBytes,
    jsonOptions,
    shutdownSignal: stopCalls.signal,
  });

  // Before Connect, so that a kept answer costs no token check, no forwarding and no encoding.
  const cache = createResponseCache(
    config.cache,
    upstreams.map((u) => u.service),
    {
      // A cached answer still counts against the client's per-address limit.
      admit: (method, req) =>
        limiter.checkAddress(exchanges.get(req)?.clientIp ?? "", isStrict(method)).then(
          () => true,
          () => false,
        ),
      ...(config.accessLog ? { accessLog: log } : {}),
    },
  );

  let draining = false;
  const dual = createDualServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    // HEAD answers like GET; both http servers leave out the body by themselves.
    if (req.method === "GET" || req.method === "HEAD") {
      const send = (status: number, type: string, body: string, headers: Record<string, string> = {}) =>
        res.writeHead(status, { "content-type": type, ...headers }).end(body);
      if (path === "/healthz") return void send(200, "text/plain", "ok");
      if (path === "/readyz") {
        if (draining) return void send(503, "text/plain", "stopping");
        return void unready().then((missing) =>
          missing.length === 0
            ? send(200, "text/plain", "ready")
            : send(503, "text/plain", `not ready: ${missing.join(", ")}`),
        );
      }
      if (path === "/metrics") {
        return void metrics.metrics().then((body) => send(200, metrics.contentType, body));
      }
      if (path === "/.well-known/jwks.json") {
        return void jwks().then(
          (set) =>
            send(200, "application/jwk-set+json", JSON.stringify(set), {
              "cache-control": "public, max-age=60",
            }),
          () => send(503, "text/plain", "key set unavailable"),
        );
      }
    }
    if (handleCors(req, res, config.corsOrigins)) return;
    stampRequest(req, res);
    const forwarded = req.headers["x-forwarded-for"];
    const exchange: Exchange = {
      clientIp: clientAddress(
        req.socket.remoteAddress,
        Array.isArray(forwarded) ? forwarded.join(",") : forwarded,
      ),
      setHeader: (name, value) => {
        if (!res.headersSent) res.setHeader(name, value);
      },
    };
    exchanges.set(req, exchange);
    // While draining, an HTTP/1.1 client is told to open its next request elsewhere.
    if (draining && req.httpVersionMajor === 1) res.setHeader("connection", "close");
    const done = new Promise<void>((resolve) => res.once("close", resolve));
    inFlight.add(done);
    void done.then(() => inFlight.delete(done));
    cache.handle(
      req,
      res,
      () => forwarder.serve(req, res, exchange) || connect(req as never, res as never),
      log,
    );
  }, config.connections);
  const { server } = dual;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, resolve);
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  log.info({ port }, "gateway listening");

  let stopping: Promise<void> | undefined;
  return {
    port,
    url: `http://${config.host === "0.0.0.0" ? "127.0.0.1" : config.host}:${port}`,
    limitsShared: limiter.sharing,
    stop() {
      stopping ??= (async () => {
        // Streams end now with UNAVAILABLE; unary calls may finish within the shutdown timeout.
        // Both write their last bytes before the connections close under them.
        draining = true;
        const closed = new Promise<void>((resolve) => server.once("close", () => resolve()));
        forwarder.stopStreams();
        dual.stopAccepting();
        const deadline = Date.now() + config.shutdownTimeoutMs;
        // Requests still arriving on open connections join the set: wait until it is empty.
        while (inFlight.size > 0 && Date.now() < deadline) {
          await Promise.race([
            Promise.all(inFlight),
            new Promise((resolve) => setTimeout(resolve, Math.max(0, deadline - Date.now())).unref()),
          ]);
        }
        if (inFlight.size > 0) {
          log.warn({ inFlight: inFlight.size }, "shutdown timeout: cancelling requests still in flight");
          stopCalls.abort();
          forwarder.stopCalls();
          await Promise.race([
            Promise.all(inFlight),
            new Promise((resolve) => setTimeout(resolve, 1_000).unref()),
          ]);
        }
        dual.close();
        // A client that stopped reading never lets its connection end: cut what is left.
        const cut = setTimeout(() => dual.destroy(), 2_000);
        await closed;
        clearTimeout(cut);
        for (const u of upstreams) {
          u.client.close();
          u.health.close();
          u.raw.close();
        }
        jwksSource.close();
        await limiter.stop();
        stopEvents.abort();
        await (await events.catch(() => undefined))?.stop();
        await natsConnection?.close();
        log.info("gateway stopped");
      })();
      return stopping;
    },
  } satisfies RunningGateway;
}
