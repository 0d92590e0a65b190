import { UserSignedUpSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { consumer } from "@protomesh/platform";
import type { Mailer } from "../mailer.ts";
import type { NotificationStore } from "../pg-notification-store.ts";
import { welcomeEmail } from "../templates.ts";

/** Sends the welcome email when an account is created, once per event. */
export function createWelcomeEmails(deps: {
  store: NotificationStore;
  mailer: Mailer;
  ackWaitMs: number;
  backoffMs: number[];
}) {
  return consumer({
    durable: "notify-welcome-emails",
    event: UserSignedUpSchema,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    // The row and the send share the transaction: a failed send rolls the row back and the
    // event is retried; a committed row means the email went out.
    async handle(event, meta, tx) {
      const email = welcomeEmail(event, meta.eventId);
      await deps.store.add(tx, {
        userId: event.userId,
        channel: "email",
        kind: "welcome",
        subject: email.subject,
        eventId: meta.eventId,
      });
      await deps.mailer.send(email);
    },
  });
}
