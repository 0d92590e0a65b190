import { envReader } from "@protomesh/platform";
import { type ConnectionLimits, defaultConnectionLimits, isOriginPattern } from "./http.ts";

/** The gateway's configuration. */
export interface GatewayConfig {
  host: string;
  port: number;
  /** grpc target of each upstream service, by service name (auth, user, notify…). */
  upstreams: Record<string, string>;
  /** Browser origins allowed by CORS; entries may use `*` as the port, or be `*` (any origin). */
  corsOrigins: string[];
  maxRequestBytes: number;
  connections: ConnectionLimits;
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
  tokenIssuer: string;
  tokenAudience: string;
  logLevel: string;
  accessLog: boolean;
  shutdownTimeoutMs: number;
}

/** Reads and validates the gateway's environment; `services` are the upstreams it routes to. */
export function readGatewayConfig(
  services: readonly { name: string; defaultPort: number }[],
  source: Record<string, string | undefined> = process.env,
): GatewayConfig {
  const env = envReader(source);
  const config: GatewayConfig = {
    host: env.string("HOST", "0.0.0.0"),
    port: env.int("PORT", 8080, 0, 65535),
    upstreams: Object.fromEntries(
      services.map((s) => [
        s.name,
        env.string(`${s.name.toUpperCase()}_ADDR`, `dns:///127.0.0.1:${s.defaultPort}`),
      ]),
    ),
    corsOrigins: env.list("CORS_ORIGINS"),
    maxRequestBytes: env.int("MAX_REQUEST_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
    connections: {
      headersTimeoutMs: env.int("HEADERS_TIMEOUT_MS", defaultConnectionLimits.headersTimeoutMs, 100, 600_000),
      bodyTimeoutMs: env.int("BODY_TIMEOUT_MS", defaultConnectionLimits.bodyTimeoutMs, 100, 3_600_000),
      idleTimeoutMs: env.int("IDLE_TIMEOUT_MS", defaultConnectionLimits.idleTimeoutMs, 100, 3_600_000),
      maxConnections: env.int("MAX_CONNECTIONS", defaultConnectionLimits.maxConnections, 1, 1_000_000),
    },
    defaultTimeoutMs: env.int("DEFAULT_TIMEOUT_MS", 10_000, 100, 600_000),
    maxTimeoutMs: env.int("MAX_TIMEOUT_MS", 60_000, 100, 3_600_000),
    tokenIssuer: env.string("TOKEN_ISSUER", "protomesh"),
    tokenAudience: env.string("TOKEN_AUDIENCE", "protomesh"),
    logLevel: env.oneOf("LOG_LEVEL", ["trace", "debug", "info", "warn", "error", "fatal", "silent"], "info"),
    accessLog: env.oneOf("ACCESS_LOG", ["on", "off"], "on") === "on",
    shutdownTimeoutMs: env.int("SHUTDOWN_TIMEOUT_MS", 10_000, 0, 600_000),
  };
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
