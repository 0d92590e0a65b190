import { join } from "node:path";
import { CatalogService } from "@protomesh/contracts/catalog/v1/catalog_pb";
import { ProductChangedSchema, StockLowSchema } from "@protomesh/contracts/catalog/v1/events_pb";
import {
  bindService,
  createPageTokens,
  defineStream,
  type ServiceModule,
  type ServiceSpec,
} from "@protomesh/platform";
import { createCatalogHandlers } from "./catalog-service.ts";
import { type CatalogConfig, readCatalogConfig } from "./config.ts";
import { seedDemoProducts } from "./demo-seed.ts";
import { createPgProductStore } from "./pg-product-store.ts";
import { createPgReservationStore } from "./pg-reservation-store.ts";
import { createReservationExpiry } from "./reservation-expiry.ts";

const DAY_MS = 86_400_000;

/** The catalog service, ready for startService. */
export function createCatalogService(config: CatalogConfig): ServiceSpec {
  return {
    config,
    migrations: join(import.meta.dirname, "../migrations"),
    streams: [defineStream({ name: "CATALOG", subjects: ["catalog.>"], maxAgeMs: 30 * DAY_MS })],
    emits: [ProductChangedSchema, StockLowSchema],
    async build({ pool, log }) {
      const products = createPgProductStore(pool);
      const reservations = createPgReservationStore(pool);
      if (config.seedDemo) await seedDemoProducts(pool, config.currency, log);
      return {
        services: [
          bindService(
            CatalogService,
            createCatalogHandlers({
              products,
              reservations,
              currency: config.currency,
              reservationTtlS: config.reservationTtlS,
              pageTokens: createPageTokens(config.meshSecret, "protomesh.catalog.v1"),
              log,
            }),
          ),
        ],
        workers: [
          createReservationExpiry({ store: reservations, intervalMs: config.expiryIntervalS * 1000, log }),
        ],
      };
    },
  };
}

/** catalog as `npm start`, the tests and the benchmarks run it. */
export const catalogModule: ServiceModule<CatalogConfig> = {
  readConfig: readCatalogConfig,
  create: createCatalogService,
};
