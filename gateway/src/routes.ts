import { type DescMethod, type DescService, getOption } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createContextKey,
  type HandlerContext,
  type Interceptor,
} from "@connectrpc/connect";
import { RateLimit, rate_limit } from "@protomesh/contracts/options/v1/options_pb";
import {
  Access,
  type AccessTokenVerifier,
  accessOf,
  bearerToken,
  type CallOptions,
  checkAccess,
  GATEWAY_TOKEN_HEADER,
  type Logger,
  metrics,
  REQUEST_ID_HEADER,
  retryDelayMs,
  statusName,
  USER_AGENT_HEADER,
  type UserIdentity,
} from "@protomesh/platform";
import { Gauge, Histogram } from "prom-client";
import type { RateLimiter } from "./rate-limits.ts";

type Forwarder = (request: unknown, options: CallOptions) => unknown;

/** A client of one upstream service: its methods by local name. */
export type UpstreamClient = Record<string, unknown>;

const requestSeconds = new Histogram({
  name: "gateway_request_seconds",
  help: "Time to serve a request through the gateway, by procedure and status code.",
  labelNames: ["procedure", "code"],
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [metrics],
});

/** True for methods the gateway exposes. */
export const isExposed = (m: DescMethod) => accessOf(m) !== Access.INTERNAL;

/** What the HTTP layer knows of a request that Connect does not: who sent it, and its response. */
export interface Exchange {
  /** The client's address (the socket's, or what a trusted proxy forwarded). */
  clientIp: string;
  /** Headers set here reach the HTTP response whatever the protocol (e.g. retry-after). */
  setHeader(name: string, value: string): void;
}

/** The request's Exchange, set by the gateway for every request it hands to Connect. */
export const exchangeKey = createContextKey<Exchange>({ clientIp: "", setHeader: () => {} });

const strictMethods = new WeakMap<DescMethod, boolean>();
/** Whether the method's contract asks for the strict limits (RATE_LIMIT_STRICT). */
export function isStrict(method: DescMethod): boolean {
  let strict = strictMethods.get(method);
  if (strict === undefined) {
    strict = getOption(method, rate_limit) === RateLimit.STRICT;
    strictMethods.set(method, strict);
  }
  return strict;
}

/** Sends `retry-after` (seconds) with a refusal by a rate limit, then rethrows it. */
async function withRetryAfter<T>(exchange: Exchange, check: Promise<T>): Promise<T> {
  try {
    return await check;
  } catch (err) {
    const ms = err instanceof ConnectError ? retryDelayMs(err) : undefined;
    if (ms !== undefined) exchange.setHeader("retry-after", String(Math.max(1, Math.ceil(ms / 1000))));
    throw err;
  }
}

const levels = new WeakMap<DescMethod, Access>();
/** accessOf, remembered: reading a custom option decodes the method's options every time. */
function levelOf(method: DescMethod): Access {
  let level = levels.get(method);
  if (level === undefined) {
    level = accessOf(method);
    levels.set(method, level);
  }
  return level;
}

/**
 * Decides whether a call may be forwarded; throws the ConnectError to answer it with. Resolves
 * with the caller the token names, if the method asks for one.
 */
export type Admission = (
  method: DescMethod,
  authorization: string | undefined,
  exchange: Exchange,
) => Promise<UserIdentity | undefined>;

/**
 * The checks every call passes before it is forwarded, whatever its protocol: the per-address
 * limit first (a flood costs the gateway as little as possible), then the token for USER and
 * ADMIN methods, then the per-user limit of whoever the token names.
 */
export function createAdmission(limiter: RateLimiter, verifier: AccessTokenVerifier): Admission {
  return async (method, authorization, exchange) => {
    const strict = isStrict(method);
    await withRetryAfter(exchange, limiter.checkAddress(exchange.clientIp, strict));
    const level = levelOf(method);
    if (level !== Access.USER && level !== Access.ADMIN) return undefined;
    const token = bearerToken(authorization);
    const user = token ? await verifier.verify(token) : undefined;
    checkAccess(level, { user });
    if (user) await withRetryAfter(exchange, limiter.checkUser(user.userId, strict));
    return user;
  };
}

/** Admission for calls served by Connect (the protocols the gateway does not forward as bytes). */
export function admissionInterceptor(admit: Admission): Interceptor {
  return (next) => async (req) => {
    await admit(req.method, req.header.get("authorization") ?? undefined, req.contextValues.get(exchangeKey));
    return next(req);
  };
}

/** How many server streams the gateway holds open at once. */
export interface StreamLimits {
  perUser: number;
  total: number;
}

const openStreams = new Gauge({
  name: "gateway_open_streams",
  help: "Server streams open through the gateway.",
  registers: [metrics],
});

/**
 * The server streams open through this gateway, counted per user and in total, so that one
 * client opening streams in a loop cannot take every slot. A stream also ends with
 * UNAUTHENTICATED when the token that opened it expires: the client refreshes and resubscribes
 * (upstreams on the platform do the same; this covers any other).
 */
export function createStreamSlots(limits: StreamLimits) {
  const perUser = new Map<string, number>();
  let total = 0;
  return {
    /** Takes a slot or throws RESOURCE_EXHAUSTED; `expire` ends the stream. Returns its release. */
    open(user: UserIdentity | undefined, expire: (err: ConnectError) => void): () => void {
      if (total >= limits.total) {
        throw new ConnectError(
          "the gateway holds its maximum of open streams; retry later",
          Code.ResourceExhausted,
        );
      }
      const mine = user ? (perUser.get(user.userId) ?? 0) : 0;
      if (user && mine >= limits.perUser) {
        throw new ConnectError(
          `at most ${limits.perUser} open streams per user; close one first`,
          Code.ResourceExhausted,
        );
      }
      total++;
      openStreams.set(total);
      if (user) perUser.set(user.userId, mine + 1);
      const timer =
        user &&
        setTimeout(
          () =>
            expire(
              new ConnectError("the access token expired; reconnect with a fresh one", Code.Unauthenticated),
            ),
          Math.max(0, user.expiresAt.getTime() - Date.now()),
        );
      let released = false;
      return () => {
        if (released) return;
        released = true;
        clearTimeout(timer);
        total--;
        openStreams.set(total);
        if (!user) return;
        const left = (perUser.get(user.userId) ?? 1) - 1;
        if (left > 0) perUser.set(user.userId, left);
        else perUser.delete(user.userId);
      };
    },
  };
}

export type StreamSlots = ReturnType<typeof createStreamSlots>;

/** Records one call's end: one access-log line and one metric, with the status it ended with. */
export type Observer = (procedure: string, requestId: string | undefined) => (code: number) => void;

/** One access-log line (when on) and one `gateway_request_seconds` sample per call. */
export function createObserver(log: Logger, accessLog: boolean): Observer {
  return (procedure, requestId) => {
    const started = performance.now();
    return (status) => {
      const code = statusName(status);
      const seconds = (performance.now() - started) / 1000;
      requestSeconds.observe({ procedure, code }, seconds);
      if (accessLog) {
        log.info({ procedure, code, ms: Math.round(seconds * 10_000) / 10, requestId }, "request");
      }
    };
  };
}

/** Observation of calls served by Connect. */
export function observeInterceptor(observe: Observer): Interceptor {
  return (next) => async (req) => {
    const done = observe(
      `${req.service.typeName}/${req.method.name}`,
      req.header.get(REQUEST_ID_HEADER) ?? undefined,
    );
    let code = 0;
    try {
      return await next(req);
    } catch (err) {
      code = ConnectError.from(err).code;
      throw err;
    } finally {
      done(code);
    }
  };
}

/** Deadlines by method kind: unary calls get a default and a cap; streams only a (long) cap. */
export interface Timeouts {
  defaultMs: number;
  maxMs: number;
  maxStreamMs: number;
}

/**
 * Registers every exposed unary method of every upstream as a forwarder over grpc-js, for the
 * few requests the byte path leaves to Connect (gRPC over HTTP/1.1, unusual GETs). Server
 * streams are not among them: gRPC streams need HTTP/2, and every other protocol's streams are
 * forwarded as bytes. The caller's token and request id travel as metadata, with the client's
 * address and the gateway credential that makes services believe it; the client's deadline is
 * capped (the default when it set none); cancelling the request cancels the upstream call.
 */
export function forwardRoutes(
  upstreams: { service: DescService; client: UpstreamClient }[],
  timeouts: Timeouts,
  credentials: { token(): Promise<string> },
) {
  const options = async (ctx: HandlerContext): Promise<CallOptions> => {
    const headers: Record<string, string> = {
      "x-forwarded-for": ctx.values.get(exchangeKey).clientIp,
      [GATEWAY_TOKEN_HEADER]: await credentials.token(),
    };
    for (const name of ["authorization", REQUEST_ID_HEADER]) {
      const v = ctx.requestHeader.get(name);
      if (v) headers[name] = v;
    }
    // grpc-js sets its own user-agent, so the browser's travels under a name of ours.
    const agent = ctx.requestHeader.get("user-agent");
    if (agent) headers[USER_AGENT_HEADER] = agent.slice(0, 512);
    const timeoutMs = Math.min(ctx.timeoutMs() ?? timeouts.defaultMs, timeouts.maxMs);
    return { timeoutMs, signal: ctx.signal, headers };
  };
  return (router: ConnectRouter) => {
    for (const { service, client } of upstreams) {
      for (const method of service.methods.filter((m) => isExposed(m) && m.methodKind === "unary")) {
        const call = client[method.localName] as Forwarder;
        router.rpc(method, (async (req: unknown, ctx: HandlerContext) =>
          call(req, await options(ctx))) as never);
      }
    }
  };
}
