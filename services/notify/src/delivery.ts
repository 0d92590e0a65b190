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
 * Records the message in the user's inbox (when there is a user) and sends it, inside the
 * consumer's transaction: a failed send rolls the row back and the event is retried; a committed
 * row means it went out. A deleted user gets neither, whatever event arrives late.
 */
export async function deliver(
  store: NotificationStore,
  tx: Tx,
  userId: string,
  row: { channel: "email" | "sms"; kind: string; subject: string; eventId: string },
  send: () => Promise<void>,
): Promise<void> {
  if (userId && !(await store.add(tx, { ...row, userId }))) return;
  await send();
}

/** `deliver` for an email notice. */
export const deliverEmail = (
  deps: Pick<ConsumerDeps, "store" | "mailer">,
  tx: Tx,
  userId: string,
  notice: Notice,
  eventId: string,
) =>
  deliver(
    deps.store,
    tx,
    userId,
    { channel: "email", kind: notice.kind, subject: notice.subject, eventId },
    () => deps.mailer.send(notice),
  );
