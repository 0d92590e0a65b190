import type { Tx } from "@protomesh/platform";
import type { Mailer } from "./mailer.ts";
import type { NotificationStore } from "./pg-notification-store.ts";
import type { SmsProvider } from "./sms.ts";
import type { Notice } from "./templates.ts";

/** What every notify consumer needs. */
export interface ConsumerDeps {
  store: NotificationStore;
  mailer: Mailer;
  sms: SmsProvider;
  ackWaitMs: number;
  backoffMs: number[];
}

/**
 * Records the notice in the user's inbox (when there is a user) and sends it, inside the
 * consumer's transaction: a failed send rolls the row back and the event is retried; a committed
 * row means the email went out. A deleted user gets neither, whatever event arrives late.
 */
export async function deliverEmail(
  deps: Pick<ConsumerDeps, "store" | "mailer">,
  tx: Tx,
  userId: string,
  notice: Notice,
  eventId: string,
): Promise<void> {
  if (userId) {
    if (await deps.store.isDeleted(tx, userId)) return;
    await deps.store.add(tx, {
      userId,
      channel: "email",
      kind: notice.kind,
      subject: notice.subject,
      eventId,
    });
  }
  await deps.mailer.send(notice);
}
