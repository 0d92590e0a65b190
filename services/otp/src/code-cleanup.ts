import { type Logger, periodic, type Worker } from "@protomesh/platform";
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
  const { store, windows, log } = opts;
  return periodic({
    what: "cleanup of expired codes",
    intervalMs: opts.intervalMs,
    log,
    task: async () => {
      const n = await store.cleanup(windows);
      if (n > 0) log.debug({ deleted: n }, "deleted expired codes and counts");
    },
  });
}
