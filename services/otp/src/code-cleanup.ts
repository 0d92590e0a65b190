import type { Logger, Worker } from "@protomesh/platform";
import type { OtpStore } from "./pg-otp-store.ts";

/**
 * Deletes expired codes and counts older than their windows every interval, so the tables
 * hold only what a check can still need. Every replica runs it; the deletes are idempotent.
 */
export function createCodeCleanup(opts: {
  store: OtpStore;
  intervalMs: number;
  windows: { issuesS: number; failuresS: number };
  log: Logger;
}): Worker {
  const { store, intervalMs, windows, log } = opts;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    running = store.cleanup(windows).then(
      (n) => {
        if (n > 0) log.debug({ deleted: n }, "deleted expired codes and counts");
      },
      (err: unknown) => log.warn({ err }, "cleanup of expired codes failed; will retry"),
    );
  };
  return {
    start() {
      tick();
      timer = setInterval(tick, intervalMs);
      timer.unref();
    },
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
