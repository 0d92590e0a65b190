/** Thrown when the environment does not describe a valid configuration; names every bad variable. */
export class ConfigError extends Error {}

type Source = Record<string, string | undefined>;

/**
 * Reads typed settings from environment variables. Every getter records problems instead of
 * throwing, so `done()` can report all bad variables at once.
 */
export function envReader(source: Source = process.env) {
  const problems: string[] = [];
  const raw = (name: string): string | undefined => {
    const v = source[name];
    return v === undefined || v === "" ? undefined : v;
  };
  return {
    string(name: string, fallback?: string): string {
      const v = raw(name) ?? fallback;
      if (v === undefined) problems.push(`${name} is required`);
      return v ?? "";
    },
    /** A secret: required, at least minLength characters, never echoed in messages. */
    secret(name: string, minLength: number): string {
      const v = raw(name);
      if (v === undefined) problems.push(`${name} is required`);
      else if (v.length < minLength) problems.push(`${name} must be at least ${minLength} characters`);
      return v ?? "";
    },
    int(name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
      const v = raw(name);
      if (v === undefined) return fallback;
      const n = Number(v);
      if (!Number.isInteger(n) || n < min || n > max) {
        problems.push(`${name} must be an integer from ${min} to ${max}, got "${v}"`);
        return fallback;
      }
      return n;
    },
    url(name: string, protocols: string[], fallback?: string): string {
      const v = raw(name) ?? fallback;
      if (v === undefined) {
        problems.push(`${name} is required`);
        return "";
      }
      try {
        const u = new URL(v);
        if (!protocols.includes(u.protocol.replace(/:$/, ""))) {
          problems.push(`${name} must be a ${protocols.join(" or ")} URL`);
        }
      } catch {
        problems.push(`${name} is not a valid URL`);
      }
      return v;
    },
    list(name: string, fallback: string[] = []): string[] {
      const v = raw(name);
      return v === undefined
        ? fallback
        : v
            .split(",")
            .map((s) => s.trim())
            .filter(Boolean);
    },
    oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
      const v = raw(name) ?? fallback;
      if (!allowed.includes(v as T)) problems.push(`${name} must be one of ${allowed.join(", ")}`);
      return v as T;
    },
    /** Records a problem found by a check of the caller's own. */
    problem(message: string): void {
      problems.push(message);
    },
    /** Throws a ConfigError listing every problem found so far. */
    done(): void {
      if (problems.length > 0) throw new ConfigError(`invalid configuration:\n  ${problems.join("\n  ")}`);
    },
  };
}

export type EnvReader = ReturnType<typeof envReader>;

const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

/** Settings of every process of the mesh, the gateway included. */
export interface CommonConfig {
  serviceName: string;
  host: string;
  port: number;
  natsUrl: string;
  /** auth's gRPC target: its JWKS verifies access tokens. */
  authAddr: string;
  tokenIssuer: string;
  tokenAudience: string;
  logLevel: string;
  shutdownTimeoutMs: number;
}

/** Reads the settings of every process; `defaultPort` is the one it listens on. */
export function readCommonConfig(env: EnvReader, serviceName: string, defaultPort: number): CommonConfig {
  return {
    serviceName,
    host: env.string("HOST", "0.0.0.0"),
    port: env.int("PORT", defaultPort, 0, 65535),
    natsUrl: env.string("NATS_URL"),
    authAddr: env.string("AUTH_ADDR", "dns:///127.0.0.1:50051"),
    tokenIssuer: env.string("TOKEN_ISSUER", "protomesh"),
    tokenAudience: env.string("TOKEN_AUDIENCE", "protomesh"),
    logLevel: env.oneOf("LOG_LEVEL", LOG_LEVELS, "info"),
    shutdownTimeoutMs: env.int("SHUTDOWN_TIMEOUT_MS", 10_000, 0, 600_000),
  };
}

/** Settings every service shares. */
export interface BaseConfig extends CommonConfig {
  metricsPort: number;
  databaseUrl: string;
  meshSecret: string;
  /** Verifies the gateway's credential, without which a forwarded client address is ignored. */
  gatewaySecret: string;
  /** Replicas of the streams this service owns (3 on a NATS cluster). */
  streamReplicas: number;
}

/** Reads the settings every service shares; `defaultPort` is the service's gRPC port. */
export function readBaseConfig(env: EnvReader, serviceName: string, defaultPort: number): BaseConfig {
  return {
    ...readCommonConfig(env, serviceName, defaultPort),
    metricsPort: env.int("METRICS_PORT", 9464, 0, 65535),
    databaseUrl: env.url("DATABASE_URL", ["postgres", "postgresql"]),
    meshSecret: env.secret("MESH_SECRET", 32),
    gatewaySecret: env.secret("GATEWAY_SECRET", 32),
    streamReplicas: env.int("NATS_STREAM_REPLICAS", 1, 1, 5),
  };
}

/** Reads a service's environment when it needs nothing beyond the shared settings. */
export function readServiceConfig(serviceName: string, defaultPort: number) {
  return (source: Record<string, string | undefined> = process.env): BaseConfig => {
    const env = envReader(source);
    const config = readBaseConfig(env, serviceName, defaultPort);
    env.done();
    return config;
  };
}
