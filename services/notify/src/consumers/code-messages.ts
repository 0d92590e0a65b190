import { OtpIssuedSchema } from "@protomesh/contracts/otp/v1/events_pb";
import { consumer } from "@protomesh/platform";
import { toCodeMessage } from "../convert.ts";
import { type ConsumerDeps, deliver, deliverEmail } from "../delivery.ts";
import { codeEmail, codeSms } from "../templates.ts";

/**
 * One-time codes by email or SMS. The inbox records that a code was sent, never the code.
 * A code that expired before it could be sent (a long outage) is dropped: it could not be used.
 */
export function createCodeMessages(deps: ConsumerDeps) {
  return consumer({
    durable: "notify-code-messages",
    // A newer code supersedes an older one: send them in the order they were issued.
    orderKey: (e) => e.userId || e.destination,
    event: OtpIssuedSchema,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    async handle(event, meta, tx) {
      const message = toCodeMessage(event, meta.time);
      if (message.expiresAt.getTime() <= Date.now()) return;
      if (message.channel === "email") {
        await deliverEmail(
          deps,
          tx,
          event.userId,
          codeEmail(event.destination, message, meta.eventId),
          meta.eventId,
        );
        return;
      }
      const sms = codeSms(message);
      await deliver(
        deps.store,
        tx,
        event.userId,
        { channel: "sms", kind: sms.kind, subject: sms.subject, eventId: meta.eventId },
        () => deps.sms.send(event.destination, sms.text, meta.eventId),
      );
    },
  });
}
