// Browser-style clients of the gateway, one per protocol it serves.
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";

export type Protocol = "connect-json" | "grpc-web" | "grpc";

/** Adds `authorization: Bearer <token>` when a token is set. */
const bearer =
  (token: () => string | undefined): Interceptor =>
  (next) =>
  (req) => {
    const t = token();
    if (t) req.header.set("authorization", `Bearer ${t}`);
    return next(req);
  };

/** A client of one service through the gateway over the given protocol. */
export function gatewayClient<S extends DescService>(
  service: S,
  baseUrl: string,
  protocol: Protocol,
  token: () => string | undefined = () => undefined,
): Client<S> {
  const interceptors = [bearer(token)];
  const transport =
    protocol === "connect-json"
      ? createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false, interceptors })
      : protocol === "grpc-web"
        ? createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors })
        : createGrpcTransport({ baseUrl, interceptors });
  return createClient(service, transport);
}

/** A unique email for one test. */
export const uniqueEmail = (tag = "user") =>
  `${tag}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}@example.com`;
