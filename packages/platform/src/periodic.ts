import type { Logger } from "./logger.ts";
import type { Worker } from "./service.ts";

/**
 * A worker that runs `task` at start and then every `intervalMs`, on every replica: sweepers and
 * cleanups whose SQL makes replicas share the work. A run longer than the interval is not joined
 * by a second one; stop aborts `signal` (a task checks it between batches) and waits for the
 * run under way. A failed run is logged as `what` and retried at the next tick.
 */
export function periodic(opts: {
  what: string;
  intervalMs: number;
  log: Logger;
  task: (signal: AbortSignal) => Promise<void>;
}): Worker {
  const stopping = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  const tick = () => {
    if (running || stopping.signal.aborted) return;
    running = opts
      .task(stopping.signal)
      .catch((err: unknown) => opts.log.warn({ err }, `${opts.what} failed; will retry`))
      .finally(() => {
        running = undefined;
      });
  };
  return {
    start() {
      tick();
      timer = setInterval(tick, opts.intervalMs);
      timer.unref();
    },
    async stop() {
      stopping.abort();
      clearInterval(timer);
      await running;
    },
  };
}
