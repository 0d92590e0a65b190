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
  otpAddr: string;
  /** A refresh token presented again within this many seconds gets the same successor. */
  refreshGraceS: number;
  /** Hashes one client address or one account may have queued or running at once. */
  hashQueuePerClient: number;
  signIn: SignInThrottleConfig;
}

/** Failed sign-in throttling (NIST 800-63B: back-off, then a lock at a hard limit). */
export interface SignInThrottleConfig {
  /** Consecutive failures per account before the back-off starts. */
  accountFreeFailures: number;
  /** Consecutive failures per account at which it locks. */
  accountMaxFailures: number;
  ipFreeFailures: number;
  ipMaxFailures: number;
  /** First back-off delay; it doubles with every further failure, up to backoffMaxMs. */
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** How long a lock lasts, and after how long without failures a count starts over. */
  lockoutS: number;
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
    otpAddr: env.string("OTP_ADDR", "dns:///127.0.0.1:50054"),
    refreshGraceS: env.int("REFRESH_GRACE_S", 10, 0, 300),
    hashQueuePerClient: env.int("HASH_QUEUE_PER_CLIENT", 8, 1, 1000),
    signIn: {
      accountFreeFailures: env.int("SIGNIN_FREE_FAILURES", 5, 0, 100),
      accountMaxFailures: env.int("SIGNIN_MAX_FAILURES", 100, 1, 100),
      ipFreeFailures: env.int("SIGNIN_IP_FREE_FAILURES", 50, 0, 1_000_000),
      ipMaxFailures: env.int("SIGNIN_IP_MAX_FAILURES", 1000, 1, 1_000_000),
      backoffBaseMs: env.int("SIGNIN_BACKOFF_BASE_MS", 1000, 0, 3_600_000),
      backoffMaxMs: env.int("SIGNIN_BACKOFF_MAX_MS", 300_000, 0, 86_400_000),
      lockoutS: env.int("SIGNIN_LOCKOUT_S", 86_400, 1, 30 * 86_400),
    },
  };
  if (keyText && key.length !== 32)
    env.problem("AUTH_KEY_ENCRYPTION_KEY must be the base64 of exactly 32 bytes");
  env.done();
  return config;
}
