import { createServer as createHttp1, type IncomingMessage, type ServerResponse } from "node:http";
import {
  createServer as createHttp2,
  type Http2ServerRequest,
  constants as h2constants,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from "node:http2";
import { createServer as createNet, type Server, type Socket } from "node:net";
import { cors } from "@connectrpc/connect";
import { REQUEST_ID_HEADER, requestIdOf } from "@protomesh/platform";

export type Request = IncomingMessage | Http2ServerRequest;
// Both response kinds offer the same writeHead/setHeader/end; one type keeps call sites simple.
export type Response = ServerResponse;
export type Handler = (req: Request, res: Response) => void;

// A serialized origin as browsers send it (scheme://host[:port], no userinfo, path or
// trailing dot tricks), or a configured pattern, which may also have `*` as its whole port.
const ORIGIN = /^([a-z][a-z\d+.-]*):\/\/(\[[\da-f:.]+\]|[a-z\d-]+(?:\.[a-z\d-]+)*)(?::(\d{1,5}|\*))?$/i;
const DEFAULT_PORTS: Record<string, string> = { http: "80", https: "443" };

interface Origin {
  scheme: string;
  host: string;
  /** "" for the scheme's default port, "*" (patterns only) for any. */
  port: string;
}

function parseOrigin(value: string): Origin | undefined {
  const m = ORIGIN.exec(value);
  if (!m) return undefined;
  const scheme = (m[1] ?? "").toLowerCase();
  const port = m[3] ?? "";
  return {
    scheme,
    host: (m[2] ?? "").toLowerCase(),
    port: port === DEFAULT_PORTS[scheme] ? "" : port,
  };
}

/** Whether a CORS_ORIGINS entry is usable: `*`, or scheme://host with an optional port or `:*`. */
export function isOriginPattern(pattern: string): boolean {
  return pattern === "*" || parseOrigin(pattern) !== undefined;
}

/**
 * Whether a request's Origin matches one of the patterns. Scheme and host must match exactly;
 * a pattern's `*` port matches any port (including none); a bare `*` matches every origin.
 */
export function originAllowed(origin: string, patterns: readonly string[]): boolean {
  if (patterns.includes("*")) return true;
  const o = parseOrigin(origin);
  if (!o || o.port === "*") return false;
  return patterns.some((pattern) => {
    const p = parseOrigin(pattern);
    return (
      p !== undefined && p.scheme === o.scheme && p.host === o.host && (p.port === "*" || p.port === o.port)
    );
  });
}

/**
 * CORS for the configured origins only, with the headers Connect, gRPC-web and our tokens need.
 * Returns true when it answered the request (a preflight).
 */
export function handleCors(req: Request, res: Response, origins: string[]): boolean {
  const origin = req.headers.origin;
  if (!origin) return false;
  // The answer depends on the origin whether or not it is allowed, so caches must key on it.
  res.setHeader("vary", "origin");
  const allowed = originAllowed(origin, origins);
  if (allowed) {
    res.setHeader("access-control-allow-origin", origin);
    res.setHeader(
      "access-control-expose-headers",
      [...cors.exposedHeaders, REQUEST_ID_HEADER, "retry-after"].join(", "),
    );
  }
  if (req.method !== "OPTIONS") return false;
  if (!allowed) {
    res.writeHead(403).end();
    return true;
  }
  res.setHeader("access-control-allow-methods", cors.allowedMethods.join(", "));
  res.setHeader(
    "access-control-allow-headers",
    [...cors.allowedHeaders, "authorization", REQUEST_ID_HEADER].join(", "),
  );
  res.setHeader("access-control-max-age", "7200");
  res.writeHead(204).end();
  return true;
}

/** Gives every request a request id (the client's if well-formed, else a new one), echoed back. */
export function stampRequest(req: Request, res: Response): void {
  const offered = req.headers[REQUEST_ID_HEADER];
  const id = requestIdOf(typeof offered === "string" ? offered : undefined);
  req.headers[REQUEST_ID_HEADER] = id;
  res.setHeader(REQUEST_ID_HEADER, id);
}

/** How long clients may take and how many connections they may hold (README: configuration). */
export interface ConnectionLimits {
  /** Time to receive a request's complete headers; also a new connection's first bytes. */
  headersTimeoutMs: number;
  /** Time to receive a request's whole body once its headers arrived. */
  bodyTimeoutMs: number;
  /** How long a connection (HTTP/1.1 keep-alive, HTTP/2 session) with no open request may live. */
  idleTimeoutMs: number;
  /** Connections beyond this many are closed as soon as they are accepted. */
  maxConnections: number;
}

/** The limits used when none are configured. */
export const defaultConnectionLimits: ConnectionLimits = {
  headersTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
  idleTimeoutMs: 60_000,
  maxConnections: 10_000,
};

/**
 * HTTP/2 has no built-in notion of these timeouts (its session timeout counts any frame,
 * pings included, and would cut a quiet stream), so they are kept here: a session with no open
 * stream is closed after the headers timeout (before its first stream) or the idle timeout
 * (after its last), and a stream whose request body has not fully arrived in time is reset.
 * Open streams are never timed out once their request is complete, so long server streams live.
 */
function limitHttp2Session(session: ServerHttp2Session, limits: ConnectionLimits): void {
  let open = 0;
  // destroy, not close: with no stream open there is nothing to drain, and close() would keep
  // the socket until a peer that stopped talking chose to hang up.
  const closeIdle = () => session.destroy();
  let idle: NodeJS.Timeout | undefined = setTimeout(closeIdle, limits.headersTimeoutMs);
  session.once("close", () => clearTimeout(idle));
  session.on("stream", (stream: ServerHttp2Stream) => {
    open++;
    clearTimeout(idle);
    idle = undefined;
    const body = stream.endAfterHeaders
      ? undefined
      : setTimeout(() => {
          // remoteClose: the client finished sending even if the handler has not read it all.
          if (!stream.destroyed && !stream.state.remoteClose) stream.close(h2constants.NGHTTP2_CANCEL);
        }, limits.bodyTimeoutMs);
    stream.once("close", () => {
      clearTimeout(body);
      if (--open === 0 && !session.destroyed) idle = setTimeout(closeIdle, limits.idleTimeoutMs);
    });
  });
}

/** The gateway's listener, with the steps of a graceful stop. */
export interface DualServer {
  server: Server;
  /** Takes no new connections and asks open ones to go (HTTP/2 GOAWAY, idle keep-alives closed). */
  stopAccepting(): void;
  /** Ends every connection (after the in-flight responses are done). */
  close(): void;
  /** Cuts every connection at once (a drain that ran out of time). */
  destroy(): void;
}

/**
 * One port for HTTP/1.1 and cleartext HTTP/2: each connection is handed to the right server
 * by its first bytes (HTTP/2 opens with the "PRI * HTTP/2.0" preface). Both enforce `limits`.
 */
export function createDualServer(
  handler: Handler,
  limits: ConnectionLimits = defaultConnectionLimits,
): DualServer {
  const h1 = createHttp1(
    {
      headersTimeout: limits.headersTimeoutMs,
      // Node times the whole request from its first byte, so the body gets what the headers left.
      requestTimeout: limits.headersTimeoutMs + limits.bodyTimeoutMs,
      keepAliveTimeout: limits.idleTimeoutMs,
      // The two timeouts above are only checked this often (30 s by default).
      connectionsCheckingInterval: Math.max(
        50,
        Math.min(1_000, Math.floor(Math.min(limits.headersTimeoutMs, limits.bodyTimeoutMs) / 4)),
      ),
    },
    handler as never,
  );
  // Node starts enforcing headersTimeout/requestTimeout when an http server starts listening;
  // this one never listens (it is handed sockets), so start that tracking by hand.
  h1.emit("listening");
  const h2 = createHttp2({}, handler as never);
  const sessions = new Set<ServerHttp2Session>();
  h2.on("session", (session: ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    limitHttp2Session(session, limits);
  });

  const sockets = new Set<Socket>();
  const server = createNet((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    // Until the first bytes arrive neither http server owns the socket, so neither times it.
    const silent = () => socket.destroy();
    socket.setTimeout(limits.headersTimeoutMs);
    socket.once("timeout", silent);
    socket.once("data", (chunk: Buffer) => {
      socket.setTimeout(0);
      socket.off("timeout", silent);
      socket.pause();
      socket.unshift(chunk);
      if (chunk.subarray(0, 3).toString("latin1") === "PRI") {
        // http2 reads the socket's buffered bytes and then its handle directly: resuming the
        // JS stream here would steal frames from it.
        h2.emit("connection", socket);
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    });
  });
  server.maxConnections = limits.maxConnections;
  return {
    server,
    stopAccepting() {
      server.close();
      // GOAWAY: open streams finish, new ones go to another replica.
      for (const session of sessions) session.close();
      h1.closeIdleConnections();
    },
    close() {
      server.close();
      // Also stops the timeout checks started above, and closes idle keep-alive connections.
      h1.close();
      for (const s of sockets) s.end();
    },
    destroy() {
      for (const s of sockets) s.destroy();
    },
  };
}
