import { type Logger, periodic, type Worker } from "@protomesh/platform";
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
  const { store, log } = opts;
  return periodic({
    what: "reservation expiry",
    intervalMs: opts.intervalMs,
    log,
    task: async (signal) => {
      let n = 0;
      while (!signal.aborted && n < MAX_PER_TICK && (await store.expireOne())) n++;
      if (n > 0) {
        reservationEnds.inc({ how: "expired" }, n);
        log.info({ expired: n }, "expired reservations; their units are back in stock");
      }
    },
  });
}
