import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import type { ServerUnaryCall, ServerWritableStream } from "@grpc/grpc-js";
import type { UserIdentity } from "./caller.ts";
import { Code, ConnectError } from "./errors.ts";
import type { Logger } from "./logger.ts";

/** What a handler knows about the call it serves; free of transport details. */
export interface CallContext {
  requestId: string;
  /** The signed-in user, if the call carried a valid access token. */
  user: UserIdentity | undefined;
  /** The calling service, if the call came from inside the mesh. */
  service: string | undefined;
  /** The end user's address as the gateway saw it, else the peer's. */
  clientIp: string;
  /** The end user's User-Agent as the gateway saw it ("" when unknown), e.g. for naming sessions. */
  userAgent: string;
  /** The access token as received, so calls made on the user's behalf can forward it. */
  accessToken: string | undefined;
  deadline: Date | undefined;
  /**
   * Aborted when the caller cancels, the deadline passes, or the server stops (at once for
   * streams, after the drain timeout for unary calls).
   */
  signal: AbortSignal;
  log: Logger;
}

/** The signed-in user, or UNAUTHENTICATED for a call that has none (e.g. from a service). */
export function requireUser(ctx: CallContext): UserIdentity {
  if (!ctx.user) throw new ConnectError("this method needs a signed-in user", Code.Unauthenticated);
  return ctx.user;
}

/**
 * The signed-in user whose email address is verified: FAILED_PRECONDITION otherwise (a user
 * who has not proven the address yet may sign in, but not do what needs it).
 */
export function requireVerifiedEmail(ctx: CallContext): UserIdentity {
  const user = requireUser(ctx);
  if (!user.emailVerified) throw new ConnectError("verify your email address first", Code.FailedPrecondition);
  return user;
}

/** The inbound call being served, so outbound calls inherit its deadline and cancellation. */
export interface InboundCall {
  call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>;
  ctx: CallContext;
}

export const inboundCall = new AsyncLocalStorage<InboundCall>();

export const REQUEST_ID_HEADER = "x-request-id";
const SAFE_REQUEST_ID = /^[\w.:-]{1,128}$/;

/**
 * The one request-id rule of the gateway and the services: keep the caller's id when it is
 * short and plain (so it can be logged and forwarded safely), otherwise make a new one.
 */
export function requestIdOf(offered: string | undefined | null): string {
  return offered && SAFE_REQUEST_ID.test(offered) ? offered : randomUUID();
}
