import { type BaseConfig, envReader, readBaseConfig } from "@protomesh/platform";

/** Where text messages go: nowhere (SendSms and SMS codes fail), the console, or an HTTP webhook. */
export const SMS_PROVIDERS = ["none", "console", "webhook"] as const;
export type SmsProviderName = (typeof SMS_PROVIDERS)[number];

/** notify's configuration. */
export interface NotifyConfig extends BaseConfig {
  smtpUrl: string;
  mailFrom: string;
  smsProvider: SmsProviderName;
  /** Where the webhook provider POSTs {to, text, id}; empty for the other providers. */
  smsWebhookUrl: string;
  /** How long one webhook request may take before it counts as failed. */
  smsTimeoutMs: number;
  /** How long JetStream waits for an ack before redelivering. */
  ackWaitMs: number;
  /** Waits between attempts of an event that failed (the last one repeats), before it is dead-lettered. */
  retryBackoffMs: number[];
  /** user's gRPC target: a chat email needs the recipient's address and the sender's name. */
  userAddr: string;
  /** How long after a chat message notify decides whether to email (a quick reader gets none). */
  chatEmailDelayMs: number;
  /** At most one chat email per conversation and person within this many seconds. */
  chatEmailQuietS: number;
}

/** Reads and validates notify's environment; throws naming every bad variable. */
export function readNotifyConfig(source: Record<string, string | undefined> = process.env): NotifyConfig {
  const env = envReader(source);
  const backoff = env.list("RETRY_BACKOFF_MS", ["1000", "5000", "30000", "60000"]).map(Number);
  if (backoff.some((n) => !Number.isInteger(n) || n < 0 || n > 3_600_000)) {
    env.problem("RETRY_BACKOFF_MS must be a comma-separated list of integers from 0 to 3600000");
  }
  // "none" by default: printing codes to stdout is for a laptop, never a silent fallback in a cluster.
  const smsProvider = env.oneOf("SMS_PROVIDER", SMS_PROVIDERS, "none");
  let smsWebhookUrl = "";
  if (smsProvider === "webhook") smsWebhookUrl = env.url("SMS_WEBHOOK_URL", ["http", "https"]);
  else if (source.SMS_WEBHOOK_URL) env.problem("SMS_WEBHOOK_URL is set but SMS_PROVIDER is not webhook");
  const smtpUrl = env.url("SMTP_URL", ["smtp", "smtps"]);
  // nodemailer reads options from the URL's query; its logger and debug output include message
  // bodies, and bodies hold one-time codes.
  if (/[?&](logger|debug)=/i.test(smtpUrl)) {
    env.problem("SMTP_URL must not set logger or debug: nodemailer would log message bodies");
  }
  const config: NotifyConfig = {
    ...readBaseConfig(env, "notify", 50053),
    smtpUrl,
    mailFrom: env.string("MAIL_FROM", "Protomesh <no-reply@protomesh.local>"),
    smsProvider,
    smsWebhookUrl,
    smsTimeoutMs: env.int("SMS_TIMEOUT_MS", 10_000, 100, 120_000),
    ackWaitMs: env.int("ACK_WAIT_MS", 30_000, 1_000, 3_600_000),
    retryBackoffMs: backoff,
    userAddr: env.string("USER_ADDR", "dns:///127.0.0.1:50052"),
    chatEmailDelayMs: env.int("CHAT_EMAIL_DELAY_MS", 30_000, 0, 3_600_000),
    chatEmailQuietS: env.int("CHAT_EMAIL_QUIET_S", 900, 0, 86_400),
  };
  env.done();
  return config;
}
