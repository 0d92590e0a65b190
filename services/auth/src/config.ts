import { type BaseConfig, envReader, readBaseConfig } from "@protomesh/platform";

/** auth's configuration. */
export interface AuthConfig extends BaseConfig {
  userAddr: string;
  /** 32 bytes that encrypt signing keys at rest. */
  keyEncryptionKey: Buffer;
  accessTokenTtlS: number;
  refreshTokenTtlS: number;
  keyRotationS: number;
  bcryptCost: number;
  bcryptThreads: number;
  /** Sign-ups left pending longer than this are resolved by the sweeper. */
  pendingSignupTimeoutS: number;
}

/** Reads and validates auth's environment; throws naming every bad variable. */
export function readAuthConfig(source: Record<string, string | undefined> = process.env): AuthConfig {
  const env = envReader(source);
  const base = readBaseConfig(env, "auth", 50051);
  const keyText = env.secret("AUTH_KEY_ENCRYPTION_KEY", 40);
  const key = Buffer.from(keyText, "base64");
  const config: AuthConfig = {
    ...base,
    userAddr: env.string("USER_ADDR", "dns:///127.0.0.1:50052"),
    keyEncryptionKey: key,
    accessTokenTtlS: env.int("ACCESS_TOKEN_TTL_S", 900, 60, 3600),
    refreshTokenTtlS: env.int("REFRESH_TOKEN_TTL_S", 30 * 86400, 3600, 365 * 86400),
    keyRotationS: env.int("KEY_ROTATION_S", 30 * 86400, 3600, 365 * 86400),
    bcryptCost: env.int("BCRYPT_COST", 10, 10, 15),
    bcryptThreads: env.int("BCRYPT_THREADS", 1, 1, 16),
    pendingSignupTimeoutS: env.int("PENDING_SIGNUP_TIMEOUT_S", 120, 1, 86400),
  };
  if (keyText && key.length !== 32)
    env.problem("AUTH_KEY_ENCRYPTION_KEY must be the base64 of exactly 32 bytes");
  env.done();
  return config;
}
