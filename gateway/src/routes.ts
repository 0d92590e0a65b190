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
  ADMIN_ROLE,
  accessOf,
  type CallOptions,
  type Logger,
  metrics,
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
      const match = /^Bearer\s+(\S+)$/i.exec(req.header.get("authorization") ?? "");
      if (!match?.[1]) throw new ConnectError("missing access token", Code.Unauthenticated);
      const user = await verifier.verify(match[1]);
      if (level === Access.ADMIN && !user.roles.includes(ADMIN_ROLE)) {
        throw new ConnectError("this method needs the admin role", Code.PermissionDenied);
      }
    }
    return next(req);
  };
}

/** One access-log line and one metric per request, with the status code it ended with. */
export function observeInterceptor(log: Logger, accessLog: boolean): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const procedure = `${req.service.typeName}/${req.method.name}`;
    let code = "ok";
    try {
      return await next(req);
    } catch (err) {
      code = Code[ConnectError.from(err).code] ?? "unknown";
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
            requestId: req.header.get("x-request-id"),
          },
          "request",
        );
      }
    }
  };
}

/**
 * Registers every exposed method of every upstream as a forwarder over grpc-js. The caller's
 * token, request id and address travel as metadata; the deadline is the client's (or the
 * default), capped; cancelling the request cancels the upstream call.
 */
export function forwardRoutes(
  upstreams: { service: DescService; client: UpstreamClient }[],
  timeouts: { defaultMs: number; maxMs: number },
) {
  const options = (ctx: HandlerContext): CallOptions => {
    const headers: Record<string, string> = {};
    for (const name of ["authorization", "x-request-id", "x-forwarded-for"]) {
      const v = ctx.requestHeader.get(name);
      if (v) headers[name] = v;
    }
    return {
      timeoutMs: Math.min(ctx.timeoutMs() ?? timeouts.defaultMs, timeouts.maxMs),
      signal: ctx.signal,
      headers,
    };
  };
  return (router: ConnectRouter) => {
    for (const { service, client } of upstreams) {
      for (const method of service.methods.filter(isExposed)) {
        // The platform client returns a promise for unary methods and an async iterable for
        // server streaming: exactly what Connect expects of each kind of handler.
        const call = client[method.localName] as Forwarder;
        router.rpc(method, ((req: unknown, ctx: HandlerContext) => call(req, options(ctx))) as never);
      }
    }
  };
}
