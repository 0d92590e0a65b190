import { SignedInSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { consumer } from "@protomesh/platform";
import { dateOf } from "../convert.ts";
import { type ConsumerDeps, deliverEmail } from "../delivery.ts";
import { newDeviceEmail } from "../templates.ts";

/** Alerts the owner of a sign-in from a device or address new to the account; other sign-ins pass quietly. */
export function createLoginAlerts(deps: ConsumerDeps) {
  return consumer({
    durable: "notify-login-alerts",
    // One user's messages in the order they happened; different users in parallel.
    orderKey: (e) => e.userId,
    event: SignedInSchema,
    ackWaitMs: deps.ackWaitMs,
    backoffMs: deps.backoffMs,
    async handle(event, meta, tx) {
      if (!event.newDevice) return;
      const at = dateOf(event.occurTime, meta.time);
      const notice = newDeviceEmail(
        { email: event.email, device: event.device, ip: event.ip, at },
        meta.eventId,
      );
      await deliverEmail(deps, tx, event.userId, notice, meta.eventId);
    },
  });
}
