import { join } from "node:path";
import { OtpIssuedSchema } from "@protomesh/contracts/otp/v1/events_pb";
import { OtpService } from "@protomesh/contracts/otp/v1/otp_pb";
import { bindService, defineStream, type ServiceModule, type ServiceSpec } from "@protomesh/platform";
import { createCodeCleanup } from "./code-cleanup.ts";
import { type OtpConfig, readOtpConfig } from "./config.ts";
import { createOtpHandlers } from "./otp-service.ts";
import { createPgOtpStore } from "./pg-otp-store.ts";

/** The otp service, ready for startService. */
export function createOtpService(config: OtpConfig): ServiceSpec {
  return {
    config,
    migrations: join(import.meta.dirname, "../migrations"),
    // OtpIssued carries the code: the stream (and its dead-letter companion) keeps an event no
    // longer than the code it carries lives.
    streams: [defineStream({ name: "OTP", subjects: ["otp.>"], maxAgeMs: config.ttlS * 1000 })],
    emits: [OtpIssuedSchema],
    async build({ pool, log }) {
      const store = createPgOtpStore(pool);
      const cleanup = createCodeCleanup({
        store,
        intervalMs: config.cleanupIntervalS * 1000,
        windows: { issuesS: Math.max(3_600, config.resendCooldownS), failuresS: config.failureWindowS },
        log,
      });
      return {
        services: [bindService(OtpService, createOtpHandlers({ store, policy: config, log }))],
        workers: [cleanup],
      };
    },
  };
}

/** otp as `npm start`, the tests and the benchmarks run it. */
export const otpModule: ServiceModule<OtpConfig> = { readConfig: readOtpConfig, create: createOtpService };
