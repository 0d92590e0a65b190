// The "naive gateway": a plain connect-node server that forwards every GetMe to the user service
// over a connect-node gRPC client. It is the floor the real gateway must beat.
// Child-process entry: USER_URL (required, e.g. http://127.0.0.1:50051), PORT (default 0),
// HTTP (1.1, the default, or 2 for cleartext HTTP/2); prints {"port":N} once listening, stops on
// SIGTERM.
import * as http from "node:http";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { type ConnectRouter, createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { portFromEnv } from "./env.ts";

const userUrl = process.env.USER_URL;
if (!userUrl) {
  process.stderr.write("naive-forwarder: USER_URL is required (e.g. http://127.0.0.1:50051)\n");
  process.exit(1);
}
const port = portFromEnv("naive-forwarder");

// Own session manager so shutdown can close the upstream HTTP/2 session explicitly.
const sessionManager = new Http2SessionManager(userUrl);
const upstream = createClient(
  UserService,
  createGrpcTransport({ baseUrl: userUrl, sessionManager, defaultTimeoutMs: 10_000 }),
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

const handler = connectNodeAdapter({ routes });
const server = process.env.HTTP === "2" ? http2.createServer(handler) : http.createServer(handler);
server.listen(port, "127.0.0.1", () => {
  const { port: bound } = server.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ port: bound })}\n`);
});

// Stopped only when the bench is over: nothing is in flight worth draining.
function stop(): void {
  sessionManager.abort();
  process.exit(0);
}
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
