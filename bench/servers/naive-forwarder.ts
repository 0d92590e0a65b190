// The "naive gateway": a plain connect-node server on HTTP/1.1 that forwards every GetMe to the
// echo server over a connect-node gRPC client. It is the baseline the real gateway must beat.
// Child-process entry: ECHO_URL (required, e.g. http://127.0.0.1:50051), PORT (default 0);
// prints {"port":N} once listening, stops on SIGTERM.
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { type ConnectRouter, createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";

const echoUrl = process.env.ECHO_URL;
if (!echoUrl) {
  process.stderr.write("naive-forwarder: ECHO_URL is required (e.g. http://127.0.0.1:50051)\n");
  process.exit(1);
}
const port = Number(process.env.PORT ?? "0");
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`naive-forwarder: PORT must be an integer 0-65535, got "${process.env.PORT}"\n`);
  process.exit(1);
}

// Own session manager so shutdown can close the upstream HTTP/2 session explicitly.
const sessionManager = new Http2SessionManager(echoUrl);
const upstream = createClient(
  UserService,
  createGrpcTransport({ baseUrl: echoUrl, sessionManager, defaultTimeoutMs: 10_000 }),
);

const routes = (router: ConnectRouter): void => {
  router.service(UserService, {
    // Passes the caller's credentials on, as any gateway must; everything else is dropped.
    getMe: (req, ctx) => {
      const authorization = ctx.requestHeader.get("authorization");
      return upstream.getMe(req, {
        signal: ctx.signal,
        ...(authorization ? { headers: { authorization } } : {}),
      });
    },
  });
};

const server = http.createServer(connectNodeAdapter({ routes }));
server.listen(port, "127.0.0.1", () => {
  const { port: bound } = server.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ port: bound })}\n`);
});

function stop(): void {
  // Keep-alive sockets would hold close() open forever; drop them, then the upstream session.
  server.close(() => {
    sessionManager.abort();
    process.exit(0);
  });
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2_000).unref();
}
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
