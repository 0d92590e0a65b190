import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { anyPack, durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "@protomesh/contracts/google/rpc/error_details_pb";
import { StatusSchema } from "@protomesh/contracts/google/rpc/status_pb";
import type { Logger } from "./logger.ts";

export { Code, ConnectError };

/** Shorthand for an expected failure whose message is safe to show to the caller. */
export function fail(code: Code, message: string): ConnectError {
  return new ConnectError(message, code);
}

// pg-pool's words when no connection freed up within connectionTimeoutMillis, and pg's when
// one could not be opened in time; the codes of a database that is down or full.
const DATABASE_BUSY =
  /^(timeout exceeded when trying to connect|Connection terminated due to connection timeout)$/;
const DATABASE_AWAY = new Set(["ECONNREFUSED", "ECONNRESET", "57P03", "53300"]);

/**
 * Whether the error says the database cannot take the call right now (every connection busy,
 * or the server down or full), not that the call is wrong: the caller should retry.
 */
function isDatabaseUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return DATABASE_BUSY.test(err.message) || DATABASE_AWAY.has(String((err as { code?: unknown }).code));
}

/**
 * Turns anything a handler threw into a status the caller may see: expected errors keep their
 * code and message; a database that cannot take the call now is UNAVAILABLE (retry: a burst of
 * reconnecting clients, not a bug); anything else is logged with its cause and becomes a bare
 * INTERNAL.
 */
export function toPublicError(err: unknown, log: Logger): ConnectError {
  if (err instanceof ConnectError) {
    if (err.code === Code.Internal || err.code === Code.Unknown) {
      log.error({ err }, "internal error");
      return new ConnectError("internal error", Code.Internal);
    }
    return err;
  }
  if (isDatabaseUnavailable(err)) {
    log.warn({ err }, "database unavailable");
    return new ConnectError("the service is busy; retry shortly", Code.Unavailable);
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

/** The call's answer, or undefined when it failed with NOT_FOUND (any other failure is thrown). */
export async function unlessNotFound<T>(call: Promise<T>): Promise<T | undefined> {
  try {
    return await call;
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.NotFound) return undefined;
    throw err;
  }
}

/** The retry delay an error carries (google.rpc.RetryInfo), in milliseconds. */
export function retryDelayMs(err: ConnectError): number | undefined {
  const info = err.findDetails(RetryInfoSchema)[0];
  if (!info?.retryDelay) return undefined;
  return Number(info.retryDelay.seconds) * 1000 + Math.ceil(info.retryDelay.nanos / 1e6);
}

/** The gRPC trailer that carries an error's details as a google.rpc.Status. */
export const STATUS_DETAILS_TRAILER = "grpc-status-details-bin";

/** Internal errors say nothing beyond "internal error", on any hop. */
const mayCarryDetails = (code: Code) => code !== Code.Internal && code !== Code.Unknown;

/**
 * The google.rpc.Status bytes for an error's details (the standard `grpc-status-details-bin`
 * trailer), or undefined when it has none to send.
 */
export function encodeStatusDetails(err: ConnectError): Uint8Array | undefined {
  if (err.details.length === 0 || !mayCarryDetails(err.code)) return undefined;
  return toBinary(
    StatusSchema,
    create(StatusSchema, {
      code: err.code,
      message: err.rawMessage,
      // Details decoded from an upstream's trailer are passed on as they came.
      details: err.details.map((d) =>
        "desc" in d
          ? anyPack(d.desc, create(d.desc, d.value))
          : { typeUrl: `type.googleapis.com/${d.type}`, value: d.value },
      ),
    }),
  );
}

/**
 * An error as received over gRPC, with the details of its `grpc-status-details-bin` trailer,
 * so that they reach the next hop (and through the gateway, the client). A trailer that does
 * not decode is ignored: the code and message still hold.
 */
export function errorWithDetails(
  message: string,
  code: Code,
  statusDetails: Uint8Array | undefined,
): ConnectError {
  const err = new ConnectError(message, code);
  if (!statusDetails || !mayCarryDetails(code)) return err;
  try {
    err.details = fromBinary(StatusSchema, statusDetails).details.map((any) => ({
      type: any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1),
      value: any.value,
    }));
  } catch {
    // Keep the error without details.
  }
  return err;
}
