import { randomUUID } from "node:crypto";
import { createServer as createHttp1, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttp2, type Http2ServerRequest } from "node:http2";
import { createServer as createNet, type Server, type Socket } from "node:net";
import { cors } from "@connectrpc/connect";

type Request = IncomingMessage | Http2ServerRequest;
// Both response kinds offer the same writeHead/setHeader/end; one type keeps call sites simple.
type Response = ServerResponse;
export type Handler = (req: Request, res: Response) => void;

const SAFE_REQUEST_ID = /^[\w.:-]{1,128}$/;

/**
 * CORS for the configured origins only, with the headers Connect, gRPC-web and our tokens need.
 * Returns true when it answered the request (a preflight).
 */
export function handleCors(req: Request, res: Response, origins: string[]): boolean {
  const origin = req.headers.origin;
  if (!origin) return false;
  const allowed = origins.includes("*") || origins.includes(origin);
  if (allowed) {
    res.setHeader("access-control-allow-origin", origin);
    res.setHeader("vary", "origin");
    res.setHeader("access-control-expose-headers", [...cors.exposedHeaders, "x-request-id"].join(", "));
  }
  if (req.method !== "OPTIONS") return false;
  if (!allowed) {
    res.writeHead(403).end();
    return true;
  }
  res.setHeader("access-control-allow-methods", cors.allowedMethods.join(", "));
  res.setHeader(
    "access-control-allow-headers",
    [...cors.allowedHeaders, "authorization", "x-request-id"].join(", "),
  );
  res.setHeader("access-control-max-age", "7200");
  res.writeHead(204).end();
  return true;
}

/**
 * Sets the headers upstream services trust: the client's address from the socket (whatever
 * the client claimed) and a request id (the client's if well-formed, else a new one).
 */
export function stampRequest(req: Request, res: Response): void {
  const offered = req.headers["x-request-id"];
  const id = typeof offered === "string" && SAFE_REQUEST_ID.test(offered) ? offered : randomUUID();
  req.headers["x-request-id"] = id;
  req.headers["x-forwarded-for"] = (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
  res.setHeader("x-request-id", id);
}

/**
 * One port for HTTP/1.1 and cleartext HTTP/2: each connection is handed to the right server
 * by its first bytes (HTTP/2 opens with the "PRI * HTTP/2.0" preface).
 */
export function createDualServer(handler: Handler): { server: Server; close(): void } {
  const h1 = createHttp1({ keepAliveTimeout: 65_000 }, handler as never);
  const h2 = createHttp2({}, handler as never);
  const sockets = new Set<Socket>();
  const server = createNet((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.once("data", (chunk: Buffer) => {
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
  return {
    server,
    close() {
      server.close();
      h1.closeIdleConnections();
      for (const s of sockets) s.end();
    },
  };
}
