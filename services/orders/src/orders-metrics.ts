import { metrics } from "@protomesh/platform";
import { Counter } from "prom-client";

/** Orders placed (PlaceOrder and BuyNow): the shop's sales rate. */
export const ordersPlaced = new Counter({
  name: "protomesh_orders_placed_total",
  help: "Orders placed (stock reserved, order stored).",
  registers: [metrics],
});

/** Placements refused: a rise in out_of_stock is demand the shop cannot serve. */
export const ordersRefused = new Counter({
  name: "protomesh_orders_refused_total",
  help: "PlaceOrder/BuyNow calls refused, by reason (out_of_stock, not_found, invalid, catalog_unavailable, interrupted).",
  labelNames: ["reason"],
  registers: [metrics],
});

/** Cancellations by who made them; "system" ones are lost reservations and deleted accounts. */
export const ordersCancelled = new Counter({
  name: "protomesh_orders_cancelled_total",
  help: "Orders cancelled, by who cancelled them (buyer, admin, system).",
  labelNames: ["by"],
  registers: [metrics],
});

/** What the sweeper settled: any steady rate says calls to catalog keep failing midway. */
export const sweeperActions = new Counter({
  name: "protomesh_orders_sweeper_actions_total",
  help: "Work the stock sweeper did (draft_released, stock_committed, expired_cancelled, stock_released) and catalog calls of it that failed (catalog_failed).",
  labelNames: ["action"],
  registers: [metrics],
});
