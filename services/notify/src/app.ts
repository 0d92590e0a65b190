import { join } from "node:path";
import { UserSignedUpSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import {
  type BaseConfig,
  bindService,
  consumer,
  envReader,
  readBaseConfig,
  type ServiceDefinition,
} from "@protomesh/platform";
import { createMailer } from "./mailer.ts";
import { createNotifyHandlers } from "./notify-service.ts";
import { createPgNotificationStore } from "./pg-notification-store.ts";
import { welcomeEmail } from "./templates.ts";

/** notify's configuration. */
export interface NotifyConfig extends BaseConfig {
  smtpUrl: string;
  mailFrom: string;
  /** How long JetStream waits for an ack before redelivering. */
  ackWaitMs: number;
}

/** Reads and validates notify's environment; throws naming every bad variable. */
export function readNotifyConfig(source: Record<string, string | undefined> = process.env): NotifyConfig {
  const env = envReader(source);
  const config: NotifyConfig = {
    ...readBaseConfig(env, "notify", 50053),
    smtpUrl: env.url("SMTP_URL", ["smtp", "smtps"]),
    mailFrom: env.string("MAIL_FROM", "Protomesh <no-reply@protomesh.local>"),
    ackWaitMs: env.int("ACK_WAIT_MS", 30_000, 1_000, 3_600_000),
  };
  env.done();
  return config;
}

/** The notify service, ready for startService. */
export function notifyService(config: NotifyConfig): ServiceDefinition {
  return {
    config,
    migrations: join(import.meta.dirname, "../migrations"),
    async build({ pool }) {
      const store = createPgNotificationStore(pool);
      const mailer = createMailer(config.smtpUrl, config.mailFrom);
      return {
        services: [bindService(NotifyService, createNotifyHandlers(store))],
        consumers: [
          consumer({
            durable: "notify-welcome-emails",
            event: UserSignedUpSchema,
            ackWaitMs: config.ackWaitMs,
            // The row and the send share the transaction: a failed send rolls the row back
            // and the event is retried; a committed row means the email went out.
            async handle(event, meta, tx) {
              const email = welcomeEmail(event, meta.eventId);
              await store.add(tx, {
                userId: event.userId,
                channel: "email",
                kind: "welcome",
                subject: email.subject,
                eventId: meta.eventId,
              });
              await mailer.send(email);
            },
          }),
        ],
        close: async () => mailer.close(),
      };
    },
  };
}
