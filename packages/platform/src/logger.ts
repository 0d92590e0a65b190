import { pino } from "pino";

export type Logger = pino.Logger;

/**
 * A JSON logger that never writes credentials, codes or hashes, whatever a caller passes it.
 * Writes to stdout unless given a destination (the test run captures every log in files).
 */
export function createLogger(service: string, level = "info", destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
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
  };
  return destination ? pino(options, destination) : pino(options);
}
