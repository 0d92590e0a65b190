import { metrics } from "@protomesh/platform";
import { Counter } from "prom-client";

/**
 * ReserveStock calls by outcome: reserved, replayed (a retry of the same order), short (not
 * enough stock), not-found, invalid (other lines for a known order id), refused (the order id
 * was released or expired), error. A rise in short is demand beyond stock; in refused, orders
 * giving up on calls that still arrive.
 */
export const reserveOutcomes = new Counter({
  name: "protomesh_catalog_reservations_total",
  help: "ReserveStock calls by outcome (reserved, replayed, short, not-found, invalid, refused, error).",
  labelNames: ["outcome"],
  registers: [metrics],
});

/** Reservations ended other than by commit: released by their order, or expired. */
export const reservationEnds = new Counter({
  name: "protomesh_catalog_reservation_ends_total",
  help: "Reservations whose units went back to stock, by how (released, expired).",
  labelNames: ["how"],
  registers: [metrics],
});
