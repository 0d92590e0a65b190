import { type BaseConfig, envReader, readBaseConfig } from "@protomesh/platform";

/** orders' configuration. */
export interface OrdersConfig extends BaseConfig {
  /** catalog's gRPC target: stock is reserved, committed and released there. */
  catalogAddr: string;
  /** How often the stock sweeper runs. */
  sweepIntervalS: number;
  /**
   * How long a draft (an order whose stock is being reserved) may stay before the sweeper
   * releases its stock and deletes it: longer than any PlaceOrder lasts.
   */
  draftGraceS: number;
}

/** Reads and validates orders' environment; throws naming every bad variable. */
export function readOrdersConfig(source: Record<string, string | undefined> = process.env): OrdersConfig {
  const env = envReader(source);
  const config: OrdersConfig = {
    ...readBaseConfig(env, "orders", 50056),
    catalogAddr: env.string("CATALOG_ADDR", "dns:///127.0.0.1:50055"),
    sweepIntervalS: env.int("ORDERS_SWEEP_INTERVAL_S", 10, 1, 3_600),
    draftGraceS: env.int("ORDERS_DRAFT_GRACE_S", 60, 1, 86_400),
  };
  env.done();
  return config;
}
