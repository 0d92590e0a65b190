import type { DescMessage } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { SessionRevokedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import type { JSONWebKeySet } from "jose";
import type { JetStreamClient, JetStreamManager, NatsConnection } from "nats";
import {
  type AccessTokenVerifier,
  createAccessTokenVerifier,
  createMeshCredentials,
  createMeshVerifier,
  createRevocationList,
  MAX_ACCESS_TOKEN_TTL_MS,
  type RevocationList,
} from "./caller.ts";
import { createServiceClient } from "./client.ts";
import type { BaseConfig } from "./config.ts";
import { createPool, migrate, type Pool, pingDatabase, platformMigrations } from "./db.ts";
import {
  type ConsumerSpec,
  createOutboxRelay,
  type RunningListener,
  type SubscriptionSpec,
  startConsumer,
  startSubscription,
  subjectOf,
  subscription,
} from "./events.ts";
import { createGatewayVerifier } from "./gateway-credentials.ts";
import { createHealth, type HealthCheck } from "./health.ts";
import type { NatsPart } from "./live.ts";
import { createLogger, type Logger } from "./logger.ts";
import { startMetricsServer } from "./metrics.ts";
import { connectNats, ensureStreams, type StreamSpec, sleep, subjectMatches } from "./nats.ts";
import { addReflection } from "./reflection.ts";
import { addServices, createCallTracker, type ServiceBinding } from "./server.ts";

/** What a service's wiring receives once the platform has connected everything. */
export interface ServiceDeps {
  config: BaseConfig;
  log: Logger;
  pool: Pool;
  /** Credentials for calling INTERNAL methods of other services. */
  mesh: { token(): Promise<string> };
  /** Sessions revoked before their tokens expire, kept current from auth's events. */
  revoked: RevocationList;
}

/** A background loop a service runs besides serving calls (a sweeper, a sender…). */
export interface Worker {
  start(): void | Promise<void>;
  stop(): Promise<void>;
}

/** What a service contributes; the platform does the rest. */
export interface ServiceParts {
  services: ServiceBinding[];
  /** Durable consumers: each event handled once by one replica. */
  consumers?: ConsumerSpec[];
  /** Per-replica subscriptions: every replica sees every event. */
  subscriptions?: SubscriptionSpec[];
  workers?: Worker[];
  /** Parts that use NATS directly (live feeds, KV): attached once NATS is connected. */
  nats?: NatsPart[];
  /** Replaces JWKS-based verification (auth verifies with its own keys). */
  accessTokens?: AccessTokenVerifier;
  /** Runs last at shutdown (close clients, worker pools). */
  close?: () => Promise<void>;
}

/** A service as the platform runs it. */
export interface ServiceSpec {
  config: BaseConfig;
  /** The service's own migrations directory. */
  migrations: string;
  /** The streams this service owns: created, and updated to match, at every start. */
  streams?: StreamSpec[];
  /** Event messages this service publishes; each must fall under one of its streams. */
  emits?: DescMessage[];
  build(deps: ServiceDeps): Promise<ServiceParts>;
  /** Test hook: runs after a consumer's transaction commits and before its ack. */
  beforeAck?: (eventId: string) => Promise<void>;
  log?: Logger;
}

/** What each service package exports, so `npm start`, tests and benchmarks run it the same way. */
export interface ServiceModule<C extends BaseConfig = BaseConfig> {
  /** Reads and validates the service's environment; throws naming every bad variable. */
  readConfig(source?: Record<string, string | undefined>): C;
  create(config: C): ServiceSpec;
}

/** A running service: its bound ports, a graceful stop and, for tests, an abrupt one. */
export interface RunningService {
  port: number;
  metricsPort: number;
  log: Logger;
  /**
   * Graceful: NOT_SERVING, end open streams with UNAVAILABLE, drain unary calls, stop
   * consumers, flush the outbox, drain NATS, close the pool.
   */
  stop(): Promise<void>;
  /** Abrupt, as in a crash: nothing is drained, acked or flushed. */
  kill(): Promise<void>;
  /**
   * Settles once NATS is connected, the streams declared and the outbox relay, consumers and
   * subscriptions started. The service serves calls before that: a NATS outage at start must
   * not keep it from serving (the outbox holds its events meanwhile).
   */
  eventsReady: Promise<void>;
}

/** Fetches auth's JWKS over gRPC for local token verification. */
export function createJwksSource(authAddr: string): { fetch: () => Promise<JSONWebKeySet>; close(): void } {
  const auth = createServiceClient(AuthService, authAddr, { defaultTimeoutMs: 5_000 });
  return {
    fetch: async () => ({
      keys: (await auth.getJwks({})).keys.map(({ kty, crv, x, kid, alg, use }) => ({
        kty,
        crv,
        x,
        kid,
        alg,
        use,
      })),
    }),
    close: () => auth.close(),
  };
}

/**
 * Keeps a revocation list current on this replica: replays the revocations whose tokens may
 * still be alive, then follows new ones, so a revoked session is refused everywhere within
 * moments of its revocation.
 */
export function followRevocations(
  revoked: RevocationList,
  deps: { js: JetStreamClient; jsm: JetStreamManager; log: Logger },
): RunningListener {
  return startSubscription(
    subscription({
      name: "session-revocations",
      event: SessionRevokedSchema,
      sinceMs: MAX_ACCESS_TOKEN_TTL_MS,
      handle(event) {
        if (!event.accessExpireTime) return;
        const at = event.occurTime ? timestampDate(event.occurTime) : new Date();
        revoked.revoke(event.sessionId, timestampDate(event.accessExpireTime), at);
      },
      onCaughtUp: () => revoked.markCurrent(),
    }),
    deps,
  );
}

/** Fails at start when an event is emitted outside the service's own streams. */
function checkEmits(emits: DescMessage[], streams: StreamSpec[]): void {
  for (const event of emits) {
    const subject = subjectOf(event);
    if (!streams.some((s) => s.subjects.some((p) => subjectMatches(p, subject)))) {
      throw new Error(`${event.typeName} (${subject}) is not in any stream this service declares`);
    }
  }
}

/**
 * The event-driven part of a service: NATS, its declared streams, the outbox relay, consumers
 * and subscriptions. Started in the background, so that the service serves its calls while
 * NATS is unreachable (its health name "events" says whether this part works).
 */
function startEvents(opts: {
  spec: ServiceSpec;
  parts: ServiceParts;
  pool: Pool;
  log: Logger;
  revoked: RevocationList;
}) {
  const { spec, parts, pool, log, revoked } = opts;
  const { config } = spec;
  const abort = new AbortController();
  let nc: NatsConnection | undefined;
  let isConnected = () => false;
  let relay: ReturnType<typeof createOutboxRelay> | undefined;
  let listeners: RunningListener[] = [];
  let started = false;
  // Each step is retried until it works (JetStream may still be electing a leader, the database
  // may blink), so this rejects only when the service stops first. A service that gave up here
  // would send and receive nothing, and judge no token, while reporting ready.
  const ready = (async () => {
    const conn = await connectNats(config.natsUrl, config.serviceName, log, abort.signal);
    nc = conn.nc;
    isConnected = conn.isConnected;
    let delay = 500;
    for (;;) {
      abort.signal.throwIfAborted();
      try {
        const jsm = await nc.jetstreamManager();
        const js = nc.jetstream();
        await ensureStreams(jsm, spec.streams ?? [], log, config.streamReplicas);
        abort.signal.throwIfAborted();
        for (const part of parts.nats ?? []) await part.attach(nc);
        relay = createOutboxRelay({ pool, js, log });
        await relay.start();
        const deps = { js, jsm, log };
        listeners = [
          followRevocations(revoked, deps),
          ...(parts.consumers ?? []).map((c) =>
            startConsumer(c, { ...deps, pool, ...(spec.beforeAck ? { beforeAck: spec.beforeAck } : {}) }),
          ),
          ...(parts.subscriptions ?? []).map((sub) => startSubscription(sub, deps)),
        ];
        started = true;
        return;
      } catch (err) {
        relay?.abort();
        relay = undefined;
        if (abort.signal.aborted) throw err;
        log.error({ err, retryInMs: delay }, "events could not start; retrying");
        await sleep(delay, abort.signal);
        delay = Math.min(delay * 2, 30_000);
      }
    }
  })();
  const settled = ready.catch(() => {});
  return {
    ready,
    health: (): HealthCheck[] => [
      { name: "nats", check: async () => isConnected() },
      // Never awaits `ready`: it may wait for NATS for as long as NATS is down.
      { name: "streams", check: async () => started },
      ...listeners.map((l) => ({ name: l.name, check: async () => l.bound() })),
    ],
    /** Stops listening, publishes what the outbox still holds, drains NATS. */
    async stop() {
      abort.abort();
      await settled;
      await Promise.all(listeners.map((l) => l.stop()));
      await relay?.stop();
      await Promise.all((parts.nats ?? []).map((p) => p.detach().catch(() => {})));
      await nc?.drain().catch(() => {});
    },
    /** As in a crash: nothing more is acked or published. */
    async kill() {
      abort.abort();
      await nc?.close().catch(() => {});
      relay?.abort();
      await settled;
      // A connection made while we were killing it is closed too.
      await nc?.close().catch(() => {});
      relay?.abort();
      await Promise.all(listeners.map((l) => l.stop()));
    },
  };
}

/**
 * Starts a service: migrations, the gRPC server with health and reflection, workers and
 * metrics; then, in the background, NATS, its streams, the outbox relay, consumers and
 * subscriptions (see `eventsReady`). Listens on config.port (0 picks a free port, which is what
 * tests do).
 */
export async function startService(spec: ServiceSpec): Promise<RunningService> {
  const { config } = spec;
  const log = spec.log ?? createLogger(config.serviceName, config.logLevel);
  const pool = createPool(config.databaseUrl, log);
  const cleanups: Array<() => Promise<unknown> | unknown> = [() => pool.end()];
  // Each cleanup runs once, last registered first, however often cleanup() is called.
  const cleanup = async () => {
    for (const fn of cleanups.splice(0).reverse())
      await Promise.resolve()
        .then(fn)
        .catch(() => {});
  };
  const stopStreams = new AbortController();
  const stopCalls = new AbortController();
  const tracker = createCallTracker();
  try {
    checkEmits(spec.emits ?? [], spec.streams ?? []);
    await migrate(pool, [platformMigrations, spec.migrations], log);

    const mesh = createMeshCredentials(config.meshSecret, config.serviceName);
    const revoked = createRevocationList();
    const parts = await spec.build({ config, log, pool, mesh, revoked });
    if (parts.close) cleanups.push(parts.close);
    let accessTokens = parts.accessTokens;
    if (!accessTokens) {
      const jwks = createJwksSource(config.authAddr);
      cleanups.push(() => jwks.close());
      accessTokens = createAccessTokenVerifier({
        fetchJwks: jwks.fetch,
        issuer: config.tokenIssuer,
        audience: config.tokenAudience,
        revoked,
      });
    }
    // The keys before the first storm of calls (a call meanwhile fetches them itself).
    const stopLoading = new AbortController();
    cleanups.push(() => stopLoading.abort());
    accessTokens
      .loadKeys(stopLoading.signal)
      .catch((err: unknown) => log.warn({ err }, "cannot load auth's signing keys"));

    // channelz stays on for servers: with it off, grpc-js 1.14.7 left a test process that had
    // stopped its servers running (calls.test.ts); its cost per call is a few counters.
    const server = new grpc.Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
    cleanups.push(() => server.forceShutdown());
    addServices(
      server,
      parts.services,
      {
        accessTokens,
        meshToken: createMeshVerifier(config.meshSecret),
        gatewayToken: createGatewayVerifier(config.gatewaySecret),
        revoked,
      },
      log,
      { streams: stopStreams.signal, calls: stopCalls.signal, tracker },
    );
    const events = startEvents({ spec, parts, pool, log, revoked });
    // Runs before the pool closes (cleanups run in reverse): pool.end() waits for the relay's
    // LISTEN client.
    cleanups.push(() => events.kill());
    const health = createHealth(
      parts.services.map((s) => s.service.typeName),
      { ready: [{ name: "database", check: () => pingDatabase(pool) }], events: events.health },
      log,
    );
    health.addTo(server);
    cleanups.push(() => health.drain());
    addReflection(
      server,
      parts.services.map((s) => s.service),
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${config.host}:${config.port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );

    const workers = parts.workers ?? [];
    for (const w of workers) await w.start();
    cleanups.push(() => Promise.all(workers.map((w) => w.stop())));
    const metricsServer = await startMetricsServer(config.host, config.metricsPort);
    cleanups.push(() => metricsServer.server.close());
    await health.start();
    log.info({ port, metricsPort: metricsServer.port }, "started");

    let stopping: Promise<void> | undefined;
    return {
      port,
      metricsPort: metricsServer.port,
      log,
      eventsReady: events.ready,
      stop() {
        stopping ??= (async () => {
          health.drain();
          stopStreams.abort();
          await new Promise<void>((resolve) => {
            let grace: NodeJS.Timeout | undefined;
            const finish = () => {
              clearTimeout(timer);
              clearTimeout(grace);
              resolve();
            };
            const timer = setTimeout(() => {
              log.warn("shutdown timeout: cancelling calls still in flight");
              stopCalls.abort();
              server.forceShutdown();
              finish();
            }, config.shutdownTimeoutMs);
            server.tryShutdown(finish);
            // Streams that are not ours (a health Watch, a reflection session) never end by
            // themselves: once our calls are done and have had a moment to flush, cut the rest.
            // A call that arrived meanwhile is waited for too.
            const cutWhenIdle = () =>
              void tracker.idle().then(() => {
                grace = setTimeout(() => {
                  if (!tracker.isIdle()) return cutWhenIdle();
                  server.forceShutdown();
                  finish();
                }, 250);
              });
            cutWhenIdle();
          });
          await Promise.all(workers.map((w) => w.stop()));
          await events.stop();
          await cleanup();
          log.info("stopped");
        })();
        return stopping;
      },
      kill() {
        stopping ??= (async () => {
          stopStreams.abort();
          stopCalls.abort();
          server.forceShutdown();
          // Before anything else closes: a crashed process acks and publishes nothing more.
          await events.kill();
          await cleanup();
        })();
        return stopping;
      },
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** Runs a service from its main.ts: reads its config, starts it, stops gracefully on SIGTERM/SIGINT. */
export async function runMain<C extends BaseConfig>(module: ServiceModule<C>): Promise<void> {
  let running: RunningService;
  try {
    running = await startService(module.create(module.readConfig()));
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  }
  const stop = () => {
    running.stop().then(
      () => process.exit(0),
      (err) => {
        running.log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}
