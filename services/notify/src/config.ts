import { type BaseConfig, envReader, readBaseConfig } from "@protomesh/platform";

/** notify's configuration. */
export interface NotifyConfig extends BaseConfig {
  smtpUrl: string;
  mailFrom: string;
  /** How long JetStream waits for an ack before redelivering. */
  ackWaitMs: number;
  /** Waits between attempts of an event that failed (the last one repeats), before it is dead-lettered. */
  retryBackoffMs: number[];
}

/** Reads and validates notify's environment; throws naming every bad variable. */
export function readNotifyConfig(source: Record<string, string | undefined> = process.env): NotifyConfig {
  const env = envReader(source);
  const backoff = env.list("RETRY_BACKOFF_MS", ["1000", "5000", "30000", "60000"]).map(Number);
  if (backoff.some((n) => !Number.isInteger(n) || n < 0 || n > 3_600_000)) {
    env.problem("RETRY_BACKOFF_MS must be a comma-separated list of integers from 0 to 3600000");
  }
  const config: NotifyConfig = {
    ...readBaseConfig(env, "notify", 50053),
    smtpUrl: env.url("SMTP_URL", ["smtp", "smtps"]),
    mailFrom: env.string("MAIL_FROM", "Protomesh <no-reply@protomesh.local>"),
    ackWaitMs: env.int("ACK_WAIT_MS", 30_000, 1_000, 3_600_000),
    retryBackoffMs: backoff,
  };
  env.done();
  return config;
}
