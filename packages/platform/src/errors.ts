import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "./logger.ts";

export { Code, ConnectError };

/** Shorthand for an expected failure whose message is safe to show to the caller. */
export function fail(code: Code, message: string): ConnectError {
  return new ConnectError(message, code);
}

/**
 * Turns anything a handler threw into a status the caller may see: expected errors keep their
 * code and message; anything else is logged with its cause and becomes a bare INTERNAL.
 */
export function toPublicError(err: unknown, log: Logger): ConnectError {
  if (err instanceof ConnectError) {
    if (err.code === Code.Internal || err.code === Code.Unknown) {
      log.error({ err }, "internal error");
      return new ConnectError("internal error", Code.Internal);
    }
    return err;
  }
  log.error({ err }, "unexpected error");
  return new ConnectError("internal error", Code.Internal);
}
