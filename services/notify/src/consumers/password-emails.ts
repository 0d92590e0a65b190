import { PasswordChangedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { consumer } from "@protomesh/platform";
import { dateOf } from "../convert.ts";
import { type ConsumerDeps, deliverEmail } from "../delivery.ts";
import { passwordChangedEmail } from "../templates.ts";

/** Tells the owner that the password was changed or reset. */
export function createPasswordEmails(deps: ConsumerDeps) {
  return consumer({
    durable: "notify-password-emails",
    // One user's messages in the order they happened; different users in parallel.
    orderKey: (e) => e.userId,
    event: PasswordChangedSchema,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    handle: (event, meta, tx) =>
      deliverEmail(
        deps,
        tx,
        event.userId,
        passwordChangedEmail(
          { email: event.email, reset: event.reset, at: dateOf(event.occurTime, meta.time) },
          meta.eventId,
        ),
        meta.eventId,
      ),
  });
}
