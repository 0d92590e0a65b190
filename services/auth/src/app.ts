import { join } from "node:path";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { SessionRevokedSchema, UserSignedUpSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  bindService,
  createServiceClient,
  defineStream,
  type ServiceModule,
  type ServiceSpec,
} from "@protomesh/platform";
import { createAuthHandlers } from "./auth-service.ts";
import { type AuthConfig, readAuthConfig } from "./config.ts";
import { createKeyRing } from "./key-ring.ts";
import { createPasswordHasher } from "./passwords.ts";
import { createPgAuthStore } from "./pg-auth-store.ts";
import { createSignupSweeper } from "./signup-sweeper.ts";

const DAY_MS = 86_400_000;

/** The auth service, ready for startService. */
export function createAuthService(config: AuthConfig): ServiceSpec {
  return {
    config,
    migrations: join(import.meta.dirname, "../migrations"),
    streams: [defineStream({ name: "AUTH", subjects: ["auth.>"], maxAgeMs: 30 * DAY_MS })],
    emits: [UserSignedUpSchema, SessionRevokedSchema],
    async build({ pool, mesh, log, revoked }) {
      const store = createPgAuthStore(pool, { refreshS: config.refreshTokenTtlS });
      const keys = createKeyRing({
        store,
        encryptionKey: config.keyEncryptionKey,
        rotationS: config.keyRotationS,
        accessTokenTtlS: config.accessTokenTtlS,
        issuer: config.tokenIssuer,
        audience: config.tokenAudience,
        log,
      });
      await keys.load();
      const verifier = keys.verifier(revoked);
      const passwords = createPasswordHasher({ cost: config.bcryptCost, threads: config.bcryptThreads });
      const users = createServiceClient(UserService, config.userAddr, { mesh, waitForReady: true });
      const sweeper = createSignupSweeper({ store, users, timeoutS: config.pendingSignupTimeoutS, log });
      const handlers = createAuthHandlers({
        store,
        passwords,
        keys,
        verifier,
        users,
        issuer: config.tokenIssuer,
        audience: config.tokenAudience,
      });
      return {
        services: [bindService(AuthService, handlers)],
        accessTokens: verifier,
        workers: [sweeper],
        close: async () => {
          users.close();
          await passwords.close();
        },
      };
    },
  };
}

/** auth as `npm start`, the tests and the benchmarks run it. */
export const authModule: ServiceModule<AuthConfig> = {
  readConfig: readAuthConfig,
  create: createAuthService,
};
