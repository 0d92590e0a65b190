import { join } from "node:path";
import { UserUpdatedSchema } from "@protomesh/contracts/user/v1/events_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  type BaseConfig,
  bindService,
  createPageTokens,
  defineStream,
  type ServiceModule,
  type ServiceSpec,
} from "@protomesh/platform";
import { readUserConfig } from "./config.ts";
import { createAccountDeletions } from "./consumers/account-deletions.ts";
import { createPgUserStore } from "./pg-user-store.ts";
import { createUserHandlers } from "./user-service.ts";

const DAY_MS = 86_400_000;

/** The user service, ready for startService. */
export function createUserService(config: BaseConfig): ServiceSpec {
  return {
    config,
    migrations: join(import.meta.dirname, "../migrations"),
    streams: [defineStream({ name: "USER", subjects: ["user.>"], maxAgeMs: 30 * DAY_MS })],
    emits: [UserUpdatedSchema],
    async build({ pool }) {
      const store = createPgUserStore(pool);
      const pageTokens = createPageTokens(config.meshSecret, "protomesh.user.v1");
      return {
        services: [bindService(UserService, createUserHandlers(store, pageTokens))],
        consumers: [createAccountDeletions(store)],
      };
    },
  };
}

/** user as `npm start`, the tests and the benchmarks run it. */
export const userModule: ServiceModule = { readConfig: readUserConfig, create: createUserService };
