import type { DescMethod, DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type HandlerContext,
  type Interceptor,
} from "@connectrpc/connect";
import {
  Access,
  type AccessTokenVerifier,
  accessOf,
  bearerToken,
  type CallOptions,
  checkAccess,
  type Logger,
  metrics,
  REQUEST_ID_HEADER,
  statusName,
} from "@protomesh/platform";
import { Histogram } from "prom-client";

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

/** Checks the caller's token for USER and ADMIN methods before anything is forwarded. */
export function authInterceptor(verifier: AccessTokenVerifier): Interceptor {
  return (next) => async (req) => {
    const level = accessOf(req.method);
    if (level === Access.USER || level === Access.ADMIN) {
      const token = bearerToken(req.header.get("authorization"));
      checkAccess(level, { user: token ? await verifier.verify(token) : undefined });
    }
    return next(req);
  };
}

/** One access-log line and one metric per request, with the status code it ended with. */
export function observeInterceptor(log: Logger, accessLog: boolean): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const procedure = `${req.service.typeName}/${req.method.name}`;
    let code = statusName(0);
    try {
      return await next(req);
    } catch (err) {
      code = statusName(ConnectError.from(err).code);
      throw err;
    } finally {
      const seconds = (performance.now() - started) / 1000;
      requestSeconds.observe({ procedure, code }, seconds);
      if (accessLog) {
        log.info(
          {
            procedure,
            code,
            ms: Math.round(seconds * 10_000) / 10,
            requestId: req.header.get(REQUEST_ID_HEADER),
          },
          "request",
        );
      }
    }
  };
}

/** Deadlines by method kind: unary calls get a default and a cap; streams only a (long) cap. */
export interface Timeouts {
  defaultMs: number;
  maxMs: number;
  maxStreamMs: number;
}

const GATEWAY_STOPPING = () => new ConnectError("the gateway is shutting down; reconnect", Code.Unavailable);

/**
 * Registers every exposed method of every upstream as a forwarder over grpc-js. The caller's
 * token, request id and address travel as metadata; the client's deadline is capped (a unary
 * call without one gets the default, a stream none); cancelling the request cancels the
 * upstream call. Streams end with UNAVAILABLE when `stopStreams` aborts (the gateway stops).
 */
export function forwardRoutes(
  upstreams: { service: DescService; client: UpstreamClient }[],
  timeouts: Timeouts,
  stopStreams: AbortSignal,
) {
  const options = (ctx: HandlerContext, streaming: boolean): CallOptions => {
    const headers: Record<string, string> = {};
    for (const name of ["authorization", REQUEST_ID_HEADER, "x-forwarded-for"]) {
      const v = ctx.requestHeader.get(name);
      if (v) headers[name] = v;
    }
    const asked = ctx.timeoutMs();
    const timeoutMs = streaming
      ? Math.min(asked ?? timeouts.maxStreamMs, timeouts.maxStreamMs)
      : Math.min(asked ?? timeouts.defaultMs, timeouts.maxMs);
    return { timeoutMs, signal: ctx.signal, headers };
  };
  return (router: ConnectRouter) => {
    for (const { service, client } of upstreams) {
      for (const method of service.methods.filter(isExposed)) {
        const call = client[method.localName] as Forwarder;
        if (method.methodKind === "server_streaming") {
          router.rpc(method, async function* (req: unknown, ctx: HandlerContext) {
            if (stopStreams.aborted) throw GATEWAY_STOPPING();
            // One controller per stream, its listener on the gateway-wide signal removed at the
            // end (AbortSignal.any would keep every stream's signal alive until the gateway stops).
            const ctl = new AbortController();
            const abort = () => ctl.abort();
            ctx.signal.addEventListener("abort", abort);
            stopStreams.addEventListener("abort", abort);
            if (ctx.signal.aborted) abort();
            try {
              yield* call(req, { ...options(ctx, true), signal: ctl.signal }) as AsyncIterable<unknown>;
            } catch (err) {
              throw stopStreams.aborted ? GATEWAY_STOPPING() : err;
            } finally {
              ctx.signal.removeEventListener("abort", abort);
              stopStreams.removeEventListener("abort", abort);
            }
          } as never);
        } else {
          router.rpc(method, ((req: unknown, ctx: HandlerContext) =>
            call(req, options(ctx, false))) as never);
        }
      }
    }
  };
}
