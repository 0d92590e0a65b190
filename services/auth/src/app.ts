import { join } from "node:path";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import {
  EmailVerifiedSchema,
  MfaChangedSchema,
  PasswordChangedSchema,
  SessionRevokedSchema,
  SignedInSchema,
  SignUpAttemptedSchema,
  UserDeletedSchema,
  UserSignedUpSchema,
} from "@protomesh/contracts/auth/v1/events_pb";
import { OtpService } from "@protomesh/contracts/otp/v1/otp_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  bindService,
  createServiceClient,
  defineStream,
  type ServiceModule,
  type ServiceSpec,
} from "@protomesh/platform";
import { createAccountParts } from "./account-flows.ts";
import { createAuthHandlers } from "./auth-service.ts";
import { type AuthConfig, readAuthConfig } from "./config.ts";
import { createKeyRing, open, seal } from "./key-ring.ts";
import { createPasswordHasher } from "./passwords.ts";
import { createPgAuthStore } from "./pg-auth-store.ts";
import { createPgThrottleStore } from "./pg-throttle-store.ts";
import { createSessionStarter } from "./sessions.ts";
import { createSignInThrottle } from "./sign-in-throttle.ts";
import { createSignupSweeper } from "./signup-sweeper.ts";
import { createEmailVerification } from "./verification.ts";

const DAY_MS = 86_400_000;

/** The auth service, ready for startService. */
export function createAuthService(config: AuthConfig): ServiceSpec {
  return {
    config,
    migrations: join(import.meta.dirname, "../migrations"),
    streams: [defineStream({ name: "AUTH", subjects: ["auth.>"], maxAgeMs: 30 * DAY_MS })],
    emits: [
      UserSignedUpSchema,
      SessionRevokedSchema,
      SignUpAttemptedSchema,
      EmailVerifiedSchema,
      SignedInSchema,
      PasswordChangedSchema,
      MfaChangedSchema,
      UserDeletedSchema,
    ],
    async build({ pool, mesh, log, revoked }) {
      const kek = config.keyEncryptionKey;
      const store = createPgAuthStore(pool, {
        refreshS: config.refreshTokenTtlS,
        secrets: { seal: (plain) => seal(kek, plain), open: (sealed) => open(kek, sealed) },
      });
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
      const passwords = createPasswordHasher({
        cost: config.bcryptCost,
        threads: config.bcryptThreads,
        maxPerKey: config.hashQueuePerClient,
      });
      const users = createServiceClient(UserService, config.userAddr, { mesh, waitForReady: true });
      // Not waitForReady: SignUp must not hang on otp; a code that could not be sent is asked for again.
      const otp = createServiceClient(OtpService, config.otpAddr, { mesh });
      const verification = createEmailVerification(otp);
      const throttle = createSignInThrottle(createPgThrottleStore(pool, config.signIn), config.signIn);
      // Roles have one owner, user: read at every sign-in and refresh, never stored here.
      const roles = async (userId: string) => (await users.getRoles({ userId })).roles;
      const startSession = createSessionStarter({ store, keys, roles });
      const sweeper = createSignupSweeper({
        store,
        users,
        timeoutS: config.pendingSignupTimeoutS,
        refreshGraceS: config.refreshGraceS,
        onActivated: (account) =>
          verification.send(account).catch((err) => log.warn({ err }, "could not send a verification code")),
        log,
      });
      const account = createAccountParts({
        pool,
        store,
        passwords,
        throttle,
        otp,
        startSession,
        encryptionKey: kek,
      });
      const handlers = createAuthHandlers(
        {
          store,
          passwords,
          keys,
          verifier,
          users,
          verification,
          throttle,
          startSession,
          roles,
          mfa: account.mfa,
          refreshGraceS: config.refreshGraceS,
          issuer: config.tokenIssuer,
          audience: config.tokenAudience,
        },
        account.flows,
      );
      return {
        services: [bindService(AuthService, handlers)],
        accessTokens: verifier,
        workers: [sweeper],
        close: async () => {
          users.close();
          otp.close();
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
