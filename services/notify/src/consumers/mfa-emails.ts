import { MfaChangedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { consumer } from "@protomesh/platform";
import { dateOf, mfaKindOf } from "../convert.ts";
import { type ConsumerDeps, deliverEmail } from "../delivery.ts";
import { mfaChangedEmail } from "../templates.ts";

/** Tells the owner that a second factor was turned on or off. */
export function createMfaEmails(deps: ConsumerDeps) {
  return consumer({
    durable: "notify-mfa-emails",
    // One user's messages in the order they happened; different users in parallel.
    orderKey: (e) => e.userId,
    event: MfaChangedSchema,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    async handle(event, meta, tx) {
      const notice = mfaChangedEmail(
        {
          email: event.email,
          method: mfaKindOf(event.method),
          enabled: event.enabled,
          at: dateOf(event.occurTime, meta.time),
        },
        meta.eventId,
      );
      await deliverEmail(deps, tx, event.userId, notice, meta.eventId);
    },
  });
}
