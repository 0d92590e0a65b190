import type { DescMessage } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import type { JSONWebKeySet } from "jose";
import type { JetStreamClient, JetStreamManager, NatsConnection } from "nats";
import {
  type AccessTokenVerifier,
  createAccessTokenVerifier,
  createMeshCredentials,
  createMeshVerifier,
} from "./caller.ts";
import { createServiceClient } from "./client.ts";
import type { BaseConfig } from "./config.ts";
import { createPool, migrate, type Pool, pingDatabase, platformMigrations } from "./db.ts";
import { type ConsumerSpec, createOutboxRelay, startConsumer, subjectOf } from "./events.ts";
import { createHealth } from "./health.ts";
import { createLogger, type Logger } from "./logger.ts";
import { startMetricsServer } from "./metrics.ts";
import { connectNats, DEAD_LETTER_STREAM, ensureStream, streamOf } from "./nats.ts";
import { addReflection } from "./reflection.ts";
import { addServices, type ServiceBinding } from "./server.ts";

/** What a service's wiring receives once the platform has connected everything. */
export interface ServiceDeps {
  config: BaseConfig;
  log: Logger;
  pool: Pool;
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  /** Credentials for calling INTERNAL methods of other services. */
  mesh: { token(): Promise<string> };
}

/** A background loop a service runs besides serving calls (a sweeper, a sender…). */
export interface Worker {
  start(): void | Promise<void>;
  stop(): Promise<void>;
}

/** What a service contributes; the platform does the rest. */
export interface ServiceParts {
  services: ServiceBinding[];
  consumers?: ConsumerSpec[];
  workers?: Worker[];
  /** Replaces JWKS-based verification (auth verifies with its own keys). */
  accessTokens?: AccessTokenVerifier;
  /** Runs last at shutdown (close clients, worker pools). */
  close?: () => Promise<void>;
}

export interface ServiceDefinition {
  config: BaseConfig;
  /** The service's own migrations directory. */
  migrations: string;
  /** Event messages this service publishes: their streams are created at start. */
  emits?: DescMessage[];
  build(deps: ServiceDeps): Promise<ServiceParts>;
  /** Test hook: runs after a consumer's transaction commits and before its ack. */
  beforeAck?: (eventId: string) => Promise<void>;
  log?: Logger;
}

/** A running service: its bound ports, a graceful stop and, for tests, an abrupt one. */
export interface RunningService {
  port: number;
  metricsPort: number;
  log: Logger;
  /** Graceful: NOT_SERVING, drain calls, stop consumers, flush the outbox, drain NATS, close the pool. */
  stop(): Promise<void>;
  /** Abrupt, as in a crash: nothing is drained, acked or flushed. */
  kill(): Promise<void>;
}

/** Fetches auth's JWKS over gRPC for local token verification. */
export function jwksFromAuth(authAddr: string): { fetch: () => Promise<JSONWebKeySet>; close(): void } {
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
 * Starts a service: migrations, NATS and its streams, the gRPC server with health and
 * reflection, the outbox relay, consumers, workers and metrics. Listens on config.port (0 picks
 * a free port, which is what tests do).
 */
export async function startService(def: ServiceDefinition): Promise<RunningService> {
  const { config } = def;
  const log = def.log ?? createLogger(config.serviceName, config.logLevel);
  const pool = createPool(config.databaseUrl, log);
  const cleanups: Array<() => Promise<unknown> | unknown> = [() => pool.end()];
  const cleanup = async () => {
    for (const fn of cleanups.reverse())
      await Promise.resolve()
        .then(fn)
        .catch(() => {});
  };
  try {
    await migrate(pool, [platformMigrations, def.migrations], log);
    const { nc, isConnected } = await connectNats(config.natsUrl, config.serviceName, log);
    cleanups.push(() => nc.close());
    const jsm = await nc.jetstreamManager();
    const js = nc.jetstream();
    const streams = new Set((def.emits ?? []).map((e) => streamOf(subjectOf(e))));
    for (const s of streams) await ensureStream(jsm, s, [`${s.toLowerCase()}.>`]);
    await ensureStream(jsm, DEAD_LETTER_STREAM, ["dlq.>"]);

    const mesh = createMeshCredentials(config.meshSecret, config.serviceName);
    const parts = await def.build({ config, log, pool, nc, js, jsm, mesh });
    if (parts.close) cleanups.push(parts.close);
    let accessTokens = parts.accessTokens;
    if (!accessTokens) {
      const jwks = jwksFromAuth(config.authAddr);
      cleanups.push(() => jwks.close());
      accessTokens = createAccessTokenVerifier({
        fetchJwks: jwks.fetch,
        issuer: config.tokenIssuer,
        audience: config.tokenAudience,
      });
    }

    const server = new grpc.Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
    cleanups.push(() => server.forceShutdown());
    addServices(
      server,
      parts.services,
      { accessTokens, meshToken: createMeshVerifier(config.meshSecret) },
      log,
    );
    const health = createHealth(
      parts.services.map((s) => s.service.typeName),
      [
        { name: "database", check: () => pingDatabase(pool) },
        { name: "nats", check: async () => isConnected() },
      ],
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

    const relay = createOutboxRelay({ pool, js, log });
    await relay.start();
    // Runs before the pool closes (cleanups run in reverse): pool.end() waits for the relay's
    // LISTEN client.
    cleanups.push(() => relay.abort());
    const consumers = await Promise.all(
      (parts.consumers ?? []).map((c) =>
        startConsumer(c, { js, jsm, pool, log, ...(def.beforeAck ? { beforeAck: def.beforeAck } : {}) }),
      ),
    );
    const workers = parts.workers ?? [];
    for (const w of workers) await w.start();
    const metricsServer = await startMetricsServer(config.host, config.metricsPort);
    cleanups.push(() => metricsServer.server.close());
    await health.start();
    log.info({ port, metricsPort: metricsServer.port }, "started");

    let stopping: Promise<void> | undefined;
    return {
      port,
      metricsPort: metricsServer.port,
      log,
      stop() {
        stopping ??= (async () => {
          health.drain();
          await new Promise<void>((resolve) => {
            const timer = setTimeout(() => {
              log.warn("shutdown timeout: cancelling calls still in flight");
              server.forceShutdown();
              resolve();
            }, config.shutdownTimeoutMs);
            server.tryShutdown(() => {
              clearTimeout(timer);
              resolve();
            });
          });
          await Promise.all(consumers.map((c) => c.stop()));
          await Promise.all(workers.map((w) => w.stop()));
          await relay.stop();
          await nc.drain().catch(() => {});
          await cleanup();
          log.info("stopped");
        })();
        return stopping;
      },
      async kill() {
        server.forceShutdown();
        await cleanup();
      },
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** Runs a service from main.ts: starts it, stops gracefully on SIGTERM/SIGINT. */
export async function runMain(start: () => Promise<RunningService>): Promise<void> {
  let running: RunningService;
  try {
    running = await start();
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
