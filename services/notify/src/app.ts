import { join } from "node:path";
import { NotificationAddedSchema } from "@protomesh/contracts/notify/v1/events_pb";
import { NotifyService, type WatchMyNotificationsResponse } from "@protomesh/contracts/notify/v1/notify_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  bindService,
  createHub,
  createServiceClient,
  defineStream,
  type ServiceModule,
  type ServiceSpec,
} from "@protomesh/platform";
import { type NotifyConfig, readNotifyConfig } from "./config.ts";
import { createAccountDeletions } from "./consumers/account-deletions.ts";
import { createChatMessageEmails } from "./consumers/chat-message-emails.ts";
import { createChatReads } from "./consumers/chat-reads.ts";
import { createCodeMessages } from "./consumers/code-messages.ts";
import { createInboxFanout } from "./consumers/inbox-fanout.ts";
import { createLoginAlerts } from "./consumers/login-alerts.ts";
import { createMfaEmails } from "./consumers/mfa-emails.ts";
import { createOrderCancelledEmails } from "./consumers/order-cancelled-emails.ts";
import { createOrderPlacedEmails } from "./consumers/order-placed-emails.ts";
import { createOrderStatusEmails } from "./consumers/order-status-emails.ts";
import { createPasswordEmails } from "./consumers/password-emails.ts";
import { createSignUpAttempts } from "./consumers/signup-attempts.ts";
import { createWelcomeEmails } from "./consumers/welcome-emails.ts";
import { createMailer } from "./mailer.ts";
import { createNotifyHandlers } from "./notify-service.ts";
import { createPgNotificationStore } from "./pg-notification-store.ts";
import { createSmsProvider } from "./sms.ts";

/** The notify service, ready for startService. */
export function createNotifyService(config: NotifyConfig): ServiceSpec {
  return {
    config,
    migrations: join(import.meta.dirname, "../migrations"),
    // Only for fan-out to this service's replicas and for consumers that are online: a day is plenty.
    streams: [defineStream({ name: "NOTIFY", subjects: ["notify.>"], maxAgeMs: 86_400_000 })],
    emits: [NotificationAddedSchema],
    async build({ pool, mesh }) {
      const store = createPgNotificationStore(pool);
      const mailer = createMailer(config.smtpUrl, config.mailFrom);
      const sms = createSmsProvider(config);
      const inbox = createHub<WatchMyNotificationsResponse>();
      const deps = { store, mailer, sms, ackWaitMs: config.ackWaitMs, backoffMs: config.retryBackoffMs };
      // Waits for user to be reachable: a failed lookup is retried with the event anyway.
      const users = createServiceClient(UserService, config.userAddr, { mesh, waitForReady: true });
      return {
        services: [bindService(NotifyService, createNotifyHandlers({ store, inbox, mailer, sms }))],
        consumers: [
          createCodeMessages(deps),
          createWelcomeEmails(deps),
          createSignUpAttempts(deps),
          createLoginAlerts(deps),
          createPasswordEmails(deps),
          createMfaEmails(deps),
          createAccountDeletions(deps),
          createOrderPlacedEmails(deps),
          createOrderStatusEmails(deps),
          createOrderCancelledEmails(deps),
          createChatReads(deps),
          createChatMessageEmails({
            ...deps,
            users,
            delayMs: config.chatEmailDelayMs,
            quietS: config.chatEmailQuietS,
          }),
        ],
        subscriptions: [createInboxFanout(inbox)],
        close: async () => {
          users.close();
          mailer.close();
        },
      };
    },
  };
}

/** notify as `npm start`, the tests and the benchmarks run it. */
export const notifyModule: ServiceModule<NotifyConfig> = {
  readConfig: readNotifyConfig,
  create: createNotifyService,
};
