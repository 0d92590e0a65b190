import { SignUpAttemptedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { consumer } from "@protomesh/platform";
import { dateOf } from "../convert.ts";
import { type ConsumerDeps, deliverEmail } from "../delivery.ts";
import { signUpAttemptedEmail } from "../templates.ts";

/** Tells the owner of an address that someone tried to sign up with it (SignUp itself answers alike). */
export function createSignUpAttempts(deps: ConsumerDeps) {
  return consumer({
    durable: "notify-signup-attempts",
    // One user's messages in the order they happened; different users in parallel.
    orderKey: (e) => e.userId,
    event: SignUpAttemptedSchema,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    handle: (event, meta, tx) =>
      deliverEmail(
        deps,
        tx,
        event.userId,
        signUpAttemptedEmail({ email: event.email, at: dateOf(event.occurTime, meta.time) }, meta.eventId),
        meta.eventId,
      ),
  });
}
