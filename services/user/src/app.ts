import { join } from "node:path";
import { UserUpdatedSchema } from "@protomesh/contracts/user/v1/events_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  type BaseConfig,
  bindService,
  envReader,
  readBaseConfig,
  type ServiceDefinition,
} from "@protomesh/platform";
import { createPgUserStore } from "./pg-user-store.ts";
import { createUserHandlers } from "./user-service.ts";

/** user's configuration: only the shared settings. */
export function readUserConfig(source: Record<string, string | undefined> = process.env): BaseConfig {
  const env = envReader(source);
  const config = readBaseConfig(env, "user", 50052);
  env.done();
  return config;
}

/** The user service, ready for startService. */
export function userService(config: BaseConfig): ServiceDefinition {
  return {
    config,
    migrations: join(import.meta.dirname, "../migrations"),
    emits: [UserUpdatedSchema],
    async build({ pool }) {
      return { services: [bindService(UserService, createUserHandlers(createPgUserStore(pool)))] };
    },
  };
}
