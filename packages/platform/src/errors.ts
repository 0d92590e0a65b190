import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "@protomesh/contracts/google/rpc/error_details_pb";
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

/**
 * RESOURCE_EXHAUSTED with a google.rpc.RetryInfo detail: gRPC and Connect clients read when to
 * try again from it (the gateway also sends it as `retry-after`).
 */
export function retryLater(message: string, delayMs: number): ConnectError {
  const retryDelay = durationFromMs(Math.max(0, Math.ceil(delayMs)));
  return new ConnectError(message, Code.ResourceExhausted, undefined, [
    { desc: RetryInfoSchema, value: { retryDelay } },
  ]);
}

/** The retry delay an error carries (google.rpc.RetryInfo), in milliseconds. */
export function retryDelayMs(err: ConnectError): number | undefined {
  const info = err.findDetails(RetryInfoSchema)[0];
  if (!info?.retryDelay) return undefined;
  return Number(info.retryDelay.seconds) * 1000 + Math.ceil(info.retryDelay.nanos / 1e6);
}
