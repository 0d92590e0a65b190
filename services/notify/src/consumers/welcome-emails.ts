import { EmailVerifiedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { consumer } from "@protomesh/platform";
import { type ConsumerDeps, deliverEmail } from "../delivery.ts";
import { welcomeEmail } from "../templates.ts";

/**
 * The welcome email, once the address is verified. A new durable name: the old
 * `notify-welcome-emails` was bound to auth.user.signed_up, and JetStream keeps a durable's filter.
 */
export function createWelcomeEmails(deps: ConsumerDeps) {
  return consumer({
    durable: "notify-welcome-emails-verified",
    // One user's messages in the order they happened; different users in parallel.
    orderKey: (e) => e.userId,
    event: EmailVerifiedSchema,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    handle: (event, meta, tx) =>
      deliverEmail(deps, tx, event.userId, welcomeEmail(event, meta.eventId), meta.eventId),
  });
}
