import type { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { Code, ConnectError, type Logger, type ServiceClient, type Worker } from "@protomesh/platform";
import type { AuthStore } from "./pg-auth-store.ts";

/**
 * Settles sign-ups left pending by a crash or an outage between the two halves of SignUp:
 * activates those whose profile UserService has (and sends their verification code), deletes
 * those it does not. Only rows older than the timeout are touched, so a sign-up still in
 * flight is never judged. It also forgets refresh-token successors past their grace window.
 */
export function createSignupSweeper(opts: {
  store: AuthStore;
  users: ServiceClient<typeof UserService>;
  timeoutS: number;
  /** Called for each sign-up it activates (sends the verification code). */
  onActivated?: (account: { userId: string; email: string }) => Promise<void>;
  refreshGraceS?: number;
  intervalMs?: number;
  log: Logger;
}): Worker & { sweep(): Promise<{ activated: number; deleted: number }> } {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> | undefined;

  const sweep = async () => {
    let activated = 0;
    let deleted = 0;
    for (const pending of await opts.store.listPending(opts.timeoutS)) {
      try {
        const { profile } = await opts.users.getUser({ userId: pending.userId });
        const email = await opts.store.activate(pending.userId, profile?.displayName ?? "");
        if (email) {
          activated++;
          await opts.onActivated?.({ userId: pending.userId, email });
        }
      } catch (err) {
        if (err instanceof ConnectError && err.code === Code.NotFound) {
          await opts.store.deletePending(pending.userId);
          deleted++;
        } else {
          opts.log.warn({ err, userId: pending.userId }, "cannot settle a pending sign-up yet");
        }
      }
    }
    if (activated + deleted > 0) opts.log.info({ activated, deleted }, "settled pending sign-ups");
    await opts.store.dropExpiredSuccessors(opts.refreshGraceS ?? 0);
    return { activated, deleted };
  };

  return {
    sweep,
    start() {
      timer = setInterval(() => {
        running ??= sweep()
          .catch((err) => opts.log.warn({ err }, "sign-up sweep failed"))
          .finally(() => {
            running = undefined;
          });
      }, opts.intervalMs ?? 30_000);
      timer.unref();
    },
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
