import type { Logger, Worker } from "@protomesh/platform";
import { reservationEnds } from "./catalog-metrics.ts";
import type { ReservationStore } from "./pg-reservation-store.ts";

// Per tick, so one replica never loops for long; the rest waits for the next tick.
const MAX_PER_TICK = 1_000;

/**
 * Returns the units of reservations past their expiry, every interval, on every replica (the
 * store skips what another replica holds). A reservation an order never committed nor released
 * (orders crashed, or gave up) thus frees its stock without anyone acting.
 */
export function createReservationExpiry(opts: {
  store: ReservationStore;
  intervalMs: number;
  log: Logger;
}): Worker {
  const { store, intervalMs, log } = opts;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  let stopped = false;
  let busy = false;
  const sweep = async () => {
    let n = 0;
    while (!stopped && n < MAX_PER_TICK && (await store.expireOne())) n++;
    if (n > 0) {
      reservationEnds.inc({ how: "expired" }, n);
      log.info({ expired: n }, "expired reservations; their units are back in stock");
    }
  };
  const tick = () => {
    // A sweep longer than the interval is not joined by a second one.
    if (busy) return;
    busy = true;
    running = sweep()
      .catch((err: unknown) => log.warn({ err }, "reservation expiry failed; will retry"))
      .finally(() => {
        busy = false;
      });
  };
  return {
    start() {
      tick();
      timer = setInterval(tick, intervalMs);
      timer.unref();
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
