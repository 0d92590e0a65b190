// The one list of the mesh's services. `npm start`, the gateway, the test harness and the
// benchmarks read it; k8s/ and the Tiltfile are checked against it by test/deploy.test.ts.
// A new service is one entry here plus its folder under services/.
import { randomBytes } from "node:crypto";
import type { DescService } from "@bufbuild/protobuf";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { CatalogService } from "@protomesh/contracts/catalog/v1/catalog_pb";
import { ChatService } from "@protomesh/contracts/chat/v1/chat_pb";
import { NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { OrdersService } from "@protomesh/contracts/orders/v1/orders_pb";
import { OtpService } from "@protomesh/contracts/otp/v1/otp_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import type { BaseConfig, ServiceModule } from "@protomesh/platform";

/** What a local run (npm start, tests, benchmarks) provides for a service's own settings. */
export interface DevContext {
  /** The SMTP server that receives mail. */
  smtpUrl: string;
  /** A random secret for this run (the same for every caller asking the same name). */
  secret(name: string): string;
  /** `npm start` for a person trying it out (demo data), not a test or benchmark run. */
  demo?: boolean;
}

export interface MeshService {
  /** Folder under services/, database suffix, and the `<NAME>_ADDR` variable. */
  name: string;
  /** Default gRPC port. */
  port: number;
  /** Metrics port under `npm start` (in a cluster every pod uses METRICS_PORT's default). */
  metricsPort: number;
  /** The contract the gateway routes (its PUBLIC, USER and ADMIN methods). */
  service: DescService;
  /** The implementation, loaded on demand so the gateway never loads service code. */
  load(): Promise<ServiceModule<BaseConfig>>;
  /** Settings of its own for a local run, beyond the shared ones. */
  devEnv?(dev: DevContext): Record<string, string>;
}

// Each module's create() takes its own config type; the list stores them uniformly.
const erase = <C extends BaseConfig>(module: ServiceModule<C>) =>
  module as unknown as ServiceModule<BaseConfig>;

const list = [
  {
    name: "auth",
    port: 50051,
    metricsPort: 9101,
    service: AuthService,
    load: async () => erase((await import("@protomesh/auth")).authModule),
    devEnv: (dev) => ({ AUTH_KEY_ENCRYPTION_KEY: dev.secret("AUTH_KEY_ENCRYPTION_KEY") }),
  },
  {
    name: "user",
    port: 50052,
    metricsPort: 9102,
    service: UserService,
    load: async () => erase((await import("@protomesh/user")).userModule),
  },
  {
    name: "notify",
    port: 50053,
    metricsPort: 9103,
    service: NotifyService,
    load: async () => erase((await import("@protomesh/notify")).notifyModule),
    // SMS codes printed to the console: a laptop has no SMS provider (tests pass a webhook peer).
    devEnv: (dev) => ({ SMTP_URL: dev.smtpUrl, SMS_PROVIDER: "console" }),
  },
  {
    name: "otp",
    port: 50054,
    metricsPort: 9104,
    service: OtpService,
    load: async () => erase((await import("@protomesh/otp")).otpModule),
    devEnv: (dev) => ({ OTP_HASH_KEY: dev.secret("OTP_HASH_KEY") }),
  },
  {
    name: "catalog",
    port: 50055,
    metricsPort: 9105,
    service: CatalogService,
    load: async () => erase((await import("@protomesh/catalog")).catalogModule),
    // A newcomer's `npm start` has products to browse and buy (tests start with an empty catalog).
    devEnv: (dev) => (dev.demo ? { CATALOG_SEED_DEMO: "true" } : {}),
  },
  {
    // Reaches catalog at CATALOG_ADDR, which every local run sets like the other addresses.
    name: "orders",
    port: 50056,
    metricsPort: 9106,
    service: OrdersService,
    load: async () => erase((await import("@protomesh/orders")).ordersModule),
  },
  {
    // Reaches user at USER_ADDR (a first message checks the recipient exists).
    name: "chat",
    port: 50057,
    metricsPort: 9107,
    service: ChatService,
    load: async () => erase((await import("@protomesh/chat")).chatModule),
  },
] as const satisfies readonly MeshService[];

export type ServiceName = (typeof list)[number]["name"];

export const meshServices: readonly (MeshService & { name: ServiceName })[] = list;

/** The variable that holds a service's gRPC target, e.g. USER_ADDR. */
export const addressVariable = (name: string) => `${name.toUpperCase()}_ADDR`;

/** `DevContext.secret` for a run that keeps nothing: a random value per name, the same on every ask. */
export function randomSecrets(): (name: string) => string {
  const secrets = new Map<string, string>();
  return (name) => {
    const value = secrets.get(name) ?? randomBytes(32).toString("base64");
    secrets.set(name, value);
    return value;
  };
}
