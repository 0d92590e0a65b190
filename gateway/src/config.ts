import { addressVariable } from "@protomesh/mesh";
import { type CommonConfig, envReader, readCommonConfig } from "@protomesh/platform";
import { type CacheConfig, defaultCacheConfig } from "./cache.ts";
import { parseTrustedProxies } from "./client-address.ts";
import { type ConnectionLimits, defaultConnectionLimits, isOriginPattern } from "./http.ts";
import { defaultRateLimits, type RateLimits } from "./rate-limits.ts";
import type { StreamLimits } from "./routes.ts";

const MAX_PER_MINUTE = 1_000_000_000;

/** The gateway's configuration. */
export interface GatewayConfig extends CommonConfig {
  /** grpc target of each upstream service, by service name (auth, user, notify…). */
  upstreams: Record<string, string>;
  /** Browser origins allowed by CORS; entries may use `*` as the port, or be `*` (any origin). */
  corsOrigins: string[];
  maxRequestBytes: number;
  /** A server stream whose client reads slower than its upstream writes is ended past this. */
  maxStreamBufferBytes: number;
  /** Server streams held open at once, per user and in total. */
  streams: StreamLimits;
  connections: ConnectionLimits;
  /** Deadline of a unary call whose client set none. */
  defaultTimeoutMs: number;
  /** Cap on a unary call's deadline. */
  maxTimeoutMs: number;
  /** Cap on a stream's deadline; streams get none by default. */
  maxStreamTimeoutMs: number;
  accessLog: boolean;
  /** Signs the credential that makes services believe the client address the gateway forwards. */
  gatewaySecret: string;
  /** Proxies (addresses or CIDR ranges) whose X-Forwarded-For names the client; none by default. */
  trustedProxies: string[];
  rateLimits: RateLimits;
  /** Caching of PUBLIC side-effect-free reads served as GET. */
  cache: CacheConfig;
}

/** Reads and validates the gateway's environment; `services` are the upstreams it routes to. */
export function readGatewayConfig(
  services: readonly { name: string; port: number }[],
  source: Record<string, string | undefined> = process.env,
): GatewayConfig {
  const env = envReader(source);
  const config: GatewayConfig = {
    ...readCommonConfig(env, "gateway", 8080),
    upstreams: Object.fromEntries(
      services.map((s) => [s.name, env.string(addressVariable(s.name), `dns:///127.0.0.1:${s.port}`)]),
    ),
    corsOrigins: env.list("CORS_ORIGINS"),
    maxRequestBytes: env.int("MAX_REQUEST_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
    maxStreamBufferBytes: env.int("MAX_STREAM_BUFFER_BYTES", 256 * 1024, 1024, 64 * 1024 * 1024),
    streams: {
      perUser: env.int("STREAMS_PER_USER", 10, 1, 1_000_000),
      total: env.int("MAX_STREAMS", 50_000, 1, 10_000_000),
    },
    connections: {
      headersTimeoutMs: env.int("HEADERS_TIMEOUT_MS", defaultConnectionLimits.headersTimeoutMs, 100, 600_000),
      bodyTimeoutMs: env.int("BODY_TIMEOUT_MS", defaultConnectionLimits.bodyTimeoutMs, 100, 3_600_000),
      idleTimeoutMs: env.int("IDLE_TIMEOUT_MS", defaultConnectionLimits.idleTimeoutMs, 100, 3_600_000),
      maxConnections: env.int("MAX_CONNECTIONS", defaultConnectionLimits.maxConnections, 1, 1_000_000),
    },
    defaultTimeoutMs: env.int("DEFAULT_TIMEOUT_MS", 10_000, 100, 600_000),
    maxTimeoutMs: env.int("MAX_TIMEOUT_MS", 60_000, 100, 3_600_000),
    maxStreamTimeoutMs: env.int("MAX_STREAM_TIMEOUT_MS", 3_600_000, 1_000, 7 * 86_400_000),
    accessLog: env.oneOf("ACCESS_LOG", ["on", "off"], "on") === "on",
    gatewaySecret: env.secret("GATEWAY_SECRET", 32),
    trustedProxies: env.list("TRUSTED_PROXIES"),
    rateLimits: {
      ipPerMinute: env.int("RATE_LIMIT_IP_PER_MINUTE", defaultRateLimits.ipPerMinute, 0, MAX_PER_MINUTE),
      userPerMinute: env.int(
        "RATE_LIMIT_USER_PER_MINUTE",
        defaultRateLimits.userPerMinute,
        0,
        MAX_PER_MINUTE,
      ),
      strictIpPerMinute: env.int(
        "RATE_LIMIT_STRICT_IP_PER_MINUTE",
        defaultRateLimits.strictIpPerMinute,
        0,
        MAX_PER_MINUTE,
      ),
      strictUserPerMinute: env.int(
        "RATE_LIMIT_STRICT_USER_PER_MINUTE",
        defaultRateLimits.strictUserPerMinute,
        0,
        MAX_PER_MINUTE,
      ),
      syncMs: env.int("RATE_LIMIT_SYNC_MS", defaultRateLimits.syncMs, 50, 60_000),
    },
    cache: {
      ttlMs: env.int("GATEWAY_CACHE_TTL_MS", defaultCacheConfig.ttlMs, 0, 3_600_000),
      maxEntries: env.int("GATEWAY_CACHE_MAX_ENTRIES", defaultCacheConfig.maxEntries, 1, 1_000_000),
      maxBodyBytes: env.int(
        "GATEWAY_CACHE_MAX_BODY_BYTES",
        defaultCacheConfig.maxBodyBytes,
        0,
        16 * 1024 * 1024,
      ),
    },
  };
  for (const problem of parseTrustedProxies(config.trustedProxies).problems) env.problem(problem);
  for (const origin of config.corsOrigins) {
    if (!isOriginPattern(origin)) {
      env.problem(
        `CORS_ORIGINS: "${origin}" is not an origin (scheme://host, optionally :port or :*) or "*"`,
      );
    }
  }
  env.done();
  return config;
}
