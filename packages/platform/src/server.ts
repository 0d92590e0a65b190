import { type EventEmitter, once } from "node:events";
import { isIP } from "node:net";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type DescService,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { Access, accessOf, bearerToken, checkAccess } from "./access.ts";
import type { AccessTokenVerifier, RevocationList, UserIdentity } from "./caller.ts";
import { type CallContext, inboundCall, REQUEST_ID_HEADER, requestIdOf } from "./context.ts";
import { Code, ConnectError, encodeStatusDetails, STATUS_DETAILS_TRAILER, toPublicError } from "./errors.ts";
import { GATEWAY_TOKEN_HEADER } from "./gateway-credentials.ts";
import type { Logger } from "./logger.ts";
import { rpcHandled, rpcSeconds, statusName } from "./metrics.ts";
import { validateRequest } from "./validation.ts";

type UnaryImpl<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => Promise<MessageInitShape<O>>;
type StreamImpl<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => AsyncIterable<MessageInitShape<O>>;

/** The handlers of a service, typed from its generated descriptor. */
export type ServiceHandlers<S extends DescService> = {
  [K in keyof S["method"]]: S["method"][K] extends DescMethodUnary<infer I, infer O>
    ? UnaryImpl<I, O>
    : S["method"][K] extends DescMethodServerStreaming<infer I, infer O>
      ? StreamImpl<I, O>
      : never;
};

/** A service descriptor with its handlers, ready to be served. */
export interface ServiceBinding {
  service: DescService;
  handlers: Record<string, unknown>;
}

/** Pairs a generated service with handlers whose types it checks. */
export function bindService<S extends DescService>(service: S, handlers: ServiceHandlers<S>): ServiceBinding {
  return { service, handlers: handlers as Record<string, unknown> };
}

/** How a server learns who is calling. */
export interface CallerAuth {
  accessTokens: Pick<AccessTokenVerifier, "verify">;
  /** Ends a user's open streams when their session is revoked. */
  revoked?: RevocationList;
  /** Returns the calling service's name from a mesh token, or throws UNAUTHENTICATED. */
  meshToken: (token: string) => Promise<string>;
  /** Checks a gateway credential (it vouches for x-forwarded-for only); throws UNAUTHENTICATED. */
  gatewayToken: (token: string) => Promise<unknown>;
}

/** Counts the calls our handlers serve, so a stop knows when they are all done. */
export function createCallTracker() {
  let open = 0;
  const waiters: Array<() => void> = [];
  return {
    enter() {
      open++;
    },
    leave() {
      open--;
      if (open === 0) for (const w of waiters.splice(0)) w();
    },
    isIdle: () => open === 0,
    /** Resolves once no call is open. */
    idle(): Promise<void> {
      return open === 0 ? Promise.resolve() : new Promise((resolve) => waiters.push(resolve));
    },
  };
}

export type CallTracker = ReturnType<typeof createCallTracker>;

/**
 * How a server stops: `streams` aborts at once (open-ended streams end with UNAVAILABLE so
 * clients reconnect elsewhere), `calls` when the drain timeout is over (unary calls still running).
 */
export interface StopSignals {
  streams: AbortSignal;
  calls: AbortSignal;
  tracker: CallTracker;
}

// Responses marked shared, with their bytes once a stream has sent one.
const shared = new WeakMap<object, Buffer | null>();

/**
 * Marks a response that many streams send as it is (a hub's value, e.g. one notification to
 * every stream of a user): encoded once, however many streams send it. Frozen, and it must not
 * change afterwards, the messages inside it included (the freeze is shallow).
 */
export function sharedResponse<T extends object>(message: T): Readonly<T> {
  shared.set(message, null);
  return Object.freeze(message);
}

function encodeResponse(schema: DescMessage, m: MessageShape<DescMessage>): Buffer {
  const cached = shared.get(m);
  if (cached) return cached;
  const bytes = Buffer.from(toBinary(schema, m));
  if (cached === null) shared.set(m, bytes);
  return bytes;
}

/** Calls `fn` once the signal aborts (at once if it has); returns the unwatch. */
type WatchStop = (fn: () => void) => () => void;
type StopWatch = { streams: WatchStop; calls: WatchStop; tracker: CallTracker };

/**
 * One listener on the signal for every call. Adding or removing an AbortSignal's listener walks
 * all of its listeners: with 10,000 streams open, each new one (and each end) paid for the rest.
 */
function watchAbort(signal: AbortSignal): WatchStop {
  const watchers = new Set<() => void>();
  signal.addEventListener(
    "abort",
    () => {
      for (const fn of watchers) fn();
      watchers.clear();
    },
    { once: true },
  );
  return (fn) => {
    if (signal.aborted) {
      fn();
      return () => {};
    }
    watchers.add(fn);
    return () => watchers.delete(fn);
  };
}

export const MESH_TOKEN_HEADER = "x-mesh-token";
/** The end user's User-Agent, as the gateway forwards it (grpc-js owns the user-agent header). */
export const USER_AGENT_HEADER = "x-user-agent";

function first(md: grpc.Metadata, key: string): string | undefined {
  const v = md.get(key)[0];
  return typeof v === "string" && v !== "" ? v : undefined;
}

/** Learns who calls, then applies the method's access level before any handler runs. */
async function authorize(
  level: Access,
  md: grpc.Metadata,
  auth: CallerAuth,
): Promise<{ user: UserIdentity | undefined; service: string | undefined; accessToken: string | undefined }> {
  const mesh = first(md, MESH_TOKEN_HEADER);
  const service = mesh ? await auth.meshToken(mesh) : undefined;
  let user: UserIdentity | undefined;
  let accessToken: string | undefined;
  if (level === Access.USER || level === Access.ADMIN) {
    accessToken = bearerToken(first(md, "authorization"));
    if (accessToken) user = await auth.accessTokens.verify(accessToken);
  }
  checkAccess(level, { user, service });
  return { user, service, accessToken };
}

function toGrpcError(err: ConnectError): Partial<grpc.StatusObject> & Error {
  const status = encodeStatusDetails(err);
  const trailers = new grpc.Metadata();
  // Details (e.g. a RetryInfo) travel as the standard trailer, so clients and the next hop see them.
  if (status) trailers.set(STATUS_DETAILS_TRAILER, Buffer.from(status));
  return Object.assign(new Error(err.rawMessage), {
    code: err.code as number as grpc.status,
    details: err.rawMessage,
    metadata: trailers,
  });
}

/**
 * The end user's address and User-Agent: `x-forwarded-for` and `x-user-agent` only from a caller
 * that proves it may set them (the gateway's credential, or a mesh service forwarding what it was
 * given), otherwise the peer's address and no agent. A forged gateway credential fails the call rather than passing silently: a gateway
 * with the wrong GATEWAY_SECRET would otherwise make every user look like one address.
 */
async function endUser(
  call: { metadata: grpc.Metadata; getPeer(): string },
  auth: CallerAuth,
  service: string | undefined,
): Promise<{ clientIp: string; userAgent: string }> {
  const gateway = first(call.metadata, GATEWAY_TOKEN_HEADER);
  if (gateway) await auth.gatewayToken(gateway);
  const peer = plainAddress(call.getPeer().replace(/:\d+$/, ""));
  // Only the gateway (proven by its credential) or a mesh service speaks for the end user.
  if (!(gateway || service)) return { clientIp: peer, userAgent: "" };
  const userAgent = first(call.metadata, USER_AGENT_HEADER)?.slice(0, 512) ?? "";
  const forwarded = first(call.metadata, "x-forwarded-for");
  if (!forwarded) return { clientIp: peer, userAgent };
  // The gateway sends one address; a longer list is someone else's, and its first entry is the
  // closest to the user.
  const address = plainAddress(forwarded.split(",")[0]?.trim() ?? "");
  return { clientIp: isIP(address) ? address : peer, userAgent };
}

/** An IPv4 address as such, not IPv4-mapped IPv6 (::ffff:1.2.3.4). */
const plainAddress = (address: string) => address.replace(/^::ffff:(?=\d+\.)/i, "");

const SHUTTING_DOWN = () => new ConnectError("the server is shutting down; reconnect", Code.Unavailable);
// One for every cancel: 10,000 clients leaving at once should not build 10,000 stack traces.
const CANCELLED = new ConnectError("the call was cancelled", Code.Canceled);

/**
 * A stream lives no longer than the access token that opened it: it ends with UNAUTHENTICATED
 * when the token expires or its session is revoked (the client reconnects with a fresh token).
 */
function endWithToken(
  user: UserIdentity,
  controller: AbortController,
  auth: CallerAuth,
  ended: Array<() => void>,
) {
  const timer = setTimeout(
    () =>
      controller.abort(
        new ConnectError("the access token expired; reconnect with a fresh one", Code.Unauthenticated),
      ),
    Math.max(0, user.expiresAt.getTime() - Date.now()),
  );
  ended.push(() => clearTimeout(timer));
  const unwatch = auth.revoked?.watch(user.sessionId, () =>
    controller.abort(new ConnectError("this session was revoked; sign in again", Code.Unauthenticated)),
  );
  if (unwatch) ended.push(unwatch);
}

/** Rejects with the signal's reason once it aborts. */
function abortOf(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

/**
 * Builds the grpc-js definition of a service: binary (de)serialisation from the protobuf-es
 * descriptors, and every handler wrapped so that access is enforced, the request validated,
 * the handler awaited, and whatever it throws mapped to a safe status.
 */
function toGrpcService(binding: ServiceBinding, auth: CallerAuth, log: Logger, stop: StopWatch) {
  const definition: Record<
    string,
    grpc.MethodDefinition<MessageShape<DescMessage>, MessageShape<DescMessage>>
  > = {};
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const method of binding.service.methods) {
    const impl = binding.handlers[method.localName];
    if (typeof impl !== "function")
      throw new Error(`${binding.service.typeName}.${method.name} has no handler`);
    const streaming = method.methodKind === "server_streaming";
    if (method.methodKind !== "unary" && !streaming) {
      throw new Error(`${method.methodKind} methods are not supported (${method.name})`);
    }
    definition[method.name] = {
      path: `/${binding.service.typeName}/${method.name}`,
      requestStream: false,
      responseStream: streaming,
      requestSerialize: (m: MessageShape<DescMessage>) => Buffer.from(toBinary(method.input, m)),
      requestDeserialize: (b: Buffer) => fromBinary(method.input, b),
      responseSerialize: (m: MessageShape<DescMessage>) => encodeResponse(method.output, m),
      responseDeserialize: (b: Buffer) => fromBinary(method.output, b),
      originalName: method.localName,
    };
    const run = createCallRunner(binding.service, method, auth, log, stop);
    implementation[method.name] = streaming
      ? (call: grpc.ServerWritableStream<MessageShape<DescMessage>, unknown>) => {
          stop.tracker.enter();
          run(call, async (ctx) => {
            const it = (impl as StreamImpl<DescMessage, DescMessage>)(call.request, ctx)[
              Symbol.asyncIterator
            ]();
            const send = async () => {
              for (;;) {
                const next = await it.next();
                if (next.done || call.cancelled || ctx.signal.aborted) return;
                if (!call.write(create(method.output, next.value))) {
                  await once(call as EventEmitter, "drain", { signal: ctx.signal });
                }
              }
            };
            try {
              // A stop or a cancel ends the stream even while the handler waits for its next
              // message and ignores ctx.signal. Raced once per stream, not once per message:
              // a burst to many streams pays every promise per stream.
              await Promise.race([send(), abortOf(ctx.signal)]);
            } finally {
              void it.return?.(undefined)?.catch(() => {});
            }
          })
            .then(
              () => call.end(),
              // grpc-js sends an error status for a stream on 'error'; destroy() would send none.
              // (A cancelled call has nobody left to tell.)
              (err: ConnectError) => {
                if (!call.cancelled) call.emit("error", toGrpcError(err));
              },
            )
            // Counted until its status is handed to grpc-js, so a stop cuts nothing unsent.
            .finally(() => stop.tracker.leave());
        }
      : (
          call: grpc.ServerUnaryCall<MessageShape<DescMessage>, unknown>,
          callback: grpc.sendUnaryData<unknown>,
        ) => {
          stop.tracker.enter();
          run(call, async (ctx) =>
            create(method.output, await (impl as UnaryImpl<DescMessage, DescMessage>)(call.request, ctx)),
          )
            .then(
              (res) => callback(null, res),
              (err: ConnectError) => callback(toGrpcError(err)),
            )
            .finally(() => stop.tracker.leave());
        };
  }
  return { definition, implementation };
}

type AnyCall =
  | grpc.ServerUnaryCall<MessageShape<DescMessage>, unknown>
  | grpc.ServerWritableStream<MessageShape<DescMessage>, unknown>;

function createCallRunner(
  service: DescService,
  method: DescMethod,
  auth: CallerAuth,
  log: Logger,
  stop: StopWatch,
) {
  const level = accessOf(method);
  const labels = { service: service.typeName, method: method.name };
  const whenStopped = method.methodKind === "unary" ? stop.calls : stop.streams;
  return async <T>(call: AnyCall, body: (ctx: CallContext) => Promise<T>): Promise<T> => {
    const started = performance.now();
    const requestId = requestIdOf(first(call.metadata, REQUEST_ID_HEADER));
    const controller = new AbortController();
    const ended: Array<() => void> = [];
    const onCancel = () => controller.abort(CANCELLED);
    const onStop = () => controller.abort(SHUTTING_DOWN());
    (call as EventEmitter).once("cancelled", onCancel);
    const unwatchStop = whenStopped(onStop);
    const deadline = call.getDeadline();
    // Made when first used: most calls log nothing, and a child logger costs a copy of the
    // redaction setup.
    let callLog: Logger | undefined;
    const logOf = () => {
      callLog ??= log.child({ requestId, rpc: `${service.typeName}/${method.name}` });
      return callLog;
    };
    let code = Code.Internal as number;
    try {
      const who = await authorize(level, call.metadata, auth);
      validateRequest(method.input, call.request);
      if (method.methodKind !== "unary" && who.user) endWithToken(who.user, controller, auth, ended);
      const ctx: CallContext = {
        requestId,
        ...who,
        ...(await endUser(call, auth, who.service)),
        deadline:
          deadline instanceof Date ? deadline : Number.isFinite(deadline) ? new Date(deadline) : undefined,
        signal: controller.signal,
        get log() {
          return logOf();
        },
      };
      const result = await inboundCall.run({ call, ctx }, () => body(ctx));
      code = 0;
      return result;
    } catch (err) {
      // A handler that gave up because the caller left or the server stops has not failed:
      // report why it stopped (CANCELLED, or UNAVAILABLE so the client retries elsewhere).
      const reason: unknown = controller.signal.aborted ? controller.signal.reason : undefined;
      const safe = reason instanceof ConnectError ? reason : toPublicError(err, logOf());
      code = safe.code;
      throw safe;
    } finally {
      (call as EventEmitter).off("cancelled", onCancel);
      unwatchStop();
      for (const fn of ended) fn();
      rpcHandled.inc({ ...labels, code: statusName(code) });
      rpcSeconds.observe(labels, (performance.now() - started) / 1000);
    }
  };
}

/** Adds services to a grpc-js server with the platform's checks around every handler. */
export function addServices(
  server: grpc.Server,
  bindings: ServiceBinding[],
  auth: CallerAuth,
  log: Logger,
  stop: StopSignals,
): void {
  const watch: StopWatch = {
    streams: watchAbort(stop.streams),
    calls: watchAbort(stop.calls),
    tracker: stop.tracker,
  };
  for (const binding of bindings) {
    const { definition, implementation } = toGrpcService(binding, auth, log, watch);
    server.addService(definition as grpc.ServiceDefinition, implementation);
  }
}
