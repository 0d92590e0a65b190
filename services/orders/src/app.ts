import { join } from "node:path";
import { CatalogService } from "@protomesh/contracts/catalog/v1/catalog_pb";
import {
  OrderCancelledSchema,
  OrderPlacedSchema,
  OrderStatusChangedSchema,
} from "@protomesh/contracts/orders/v1/events_pb";
import { OrdersService } from "@protomesh/contracts/orders/v1/orders_pb";
import {
  bindService,
  createPageTokens,
  createServiceClient,
  defineStream,
  type ServiceModule,
  type ServiceSpec,
} from "@protomesh/platform";
import { createCatalogStock } from "./catalog-stock.ts";
import { type OrdersConfig, readOrdersConfig } from "./config.ts";
import { createAccountDeletions } from "./consumers/account-deletions.ts";
import { createOrdersHandlers } from "./orders-service.ts";
import { createPgOrderStore } from "./pg-order-store.ts";
import { createPlacement, type PlacementHooks } from "./placement.ts";
import { createStockSweeper } from "./stock-sweeper.ts";

const DAY_MS = 86_400_000;

/** The orders service, ready for startService; `hooks` are for tests only. */
export function createOrdersService(config: OrdersConfig, hooks: PlacementHooks = {}): ServiceSpec {
  return {
    config,
    migrations: join(import.meta.dirname, "../migrations"),
    streams: [defineStream({ name: "ORDERS", subjects: ["orders.>"], maxAgeMs: 30 * DAY_MS })],
    emits: [OrderPlacedSchema, OrderStatusChangedSchema, OrderCancelledSchema],
    async build({ pool, log, mesh }) {
      const store = createPgOrderStore(pool);
      // Not waitForReady: a buyer gets UNAVAILABLE at once while catalog is down, not a hang.
      const catalog = createServiceClient(CatalogService, config.catalogAddr, { mesh });
      const stock = createCatalogStock(catalog);
      const sweeper = createStockSweeper({
        store,
        stock,
        graceS: config.draftGraceS,
        intervalMs: config.sweepIntervalS * 1000,
        log,
      });
      const handlers = createOrdersHandlers({
        store,
        stock,
        place: createPlacement({ store, stock, log, hooks }),
        pageTokens: createPageTokens(config.meshSecret, "protomesh.orders.v1"),
        log,
      });
      return {
        services: [bindService(OrdersService, handlers)],
        consumers: [createAccountDeletions(store)],
        workers: [sweeper],
        close: async () => catalog.close(),
      };
    },
  };
}

/** orders as `npm start`, the tests and the benchmarks run it. */
export const ordersModule: ServiceModule<OrdersConfig> = {
  readConfig: readOrdersConfig,
  create: (config) => createOrdersService(config),
};
