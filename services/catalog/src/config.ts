import { type BaseConfig, envReader, readBaseConfig } from "@protomesh/platform";

/** catalog's configuration. */
export interface CatalogConfig extends BaseConfig {
  /** The shop's one currency (ISO 4217): every price is in it. */
  currency: string;
  /** How long a reservation lives unless committed or released. */
  reservationTtlS: number;
  /** How often each replica returns the units of expired reservations. */
  expiryIntervalS: number;
  /** Fill an empty catalog with demo products at start (for `npm start`). */
  seedDemo: boolean;
}

/** Reads and validates catalog's environment; throws naming every bad variable. */
export function readCatalogConfig(source: Record<string, string | undefined> = process.env): CatalogConfig {
  const env = envReader(source);
  const currency = env.string("CATALOG_CURRENCY", "EUR");
  if (!/^[A-Z]{3}$/.test(currency)) env.problem("CATALOG_CURRENCY must be an ISO 4217 code such as EUR");
  const config: CatalogConfig = {
    ...readBaseConfig(env, "catalog", 50055),
    currency,
    reservationTtlS: env.int("RESERVATION_TTL_S", 600, 1, 7 * 86_400),
    expiryIntervalS: env.int("RESERVATION_EXPIRY_INTERVAL_S", 5, 1, 3_600),
    seedDemo: env.oneOf("CATALOG_SEED_DEMO", ["true", "false"], "false") === "true",
  };
  env.done();
  return config;
}
