export { createOrdersService, ordersModule } from "./app.ts";
export { type OrdersConfig, readOrdersConfig } from "./config.ts";
export type { PlacementHooks } from "./placement.ts";
