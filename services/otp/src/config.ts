import { type BaseConfig, envReader, readBaseConfig } from "@protomesh/platform";

/** otp's configuration. */
export interface OtpConfig extends BaseConfig {
  /** Keys the HMAC under which codes are stored: a database dump alone cannot test guesses. */
  hashKey: string;
  /** How long a code lives, and how long the OTP stream keeps the event that carries it. */
  ttlS: number;
  /** Minimum wait between two codes for one subject and purpose. */
  resendCooldownS: number;
  /** Codes issued per subject and purpose within any hour. */
  maxIssuesPerHour: number;
  /** Wrong tries that kill one code. */
  maxAttempts: number;
  /** Wrong tries per subject and purpose, across codes, within the failure window. */
  maxFailures: number;
  failureWindowS: number;
  /** How often expired codes and old counters are deleted. */
  cleanupIntervalS: number;
}

/** Reads and validates otp's environment; throws naming every bad variable. */
export function readOtpConfig(source: Record<string, string | undefined> = process.env): OtpConfig {
  const env = envReader(source);
  const config: OtpConfig = {
    ...readBaseConfig(env, "otp", 50054),
    hashKey: env.secret("OTP_HASH_KEY", 32),
    ttlS: env.int("OTP_TTL_S", 600, 1, 86_400),
    resendCooldownS: env.int("OTP_RESEND_COOLDOWN_S", 60, 0, 3_600),
    maxIssuesPerHour: env.int("OTP_MAX_ISSUES_PER_HOUR", 10, 1, 1_000),
    maxAttempts: env.int("OTP_MAX_ATTEMPTS", 5, 1, 10),
    maxFailures: env.int("OTP_MAX_FAILURES", 10, 1, 1_000),
    failureWindowS: env.int("OTP_FAILURE_WINDOW_S", 3_600, 1, 7 * 86_400),
    cleanupIntervalS: env.int("OTP_CLEANUP_INTERVAL_S", 60, 1, 86_400),
  };
  env.done();
  return config;
}
