import * as http from "node:http";
import { create } from "@bufbuild/protobuf";
import { createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { Client, credentials, Metadata } from "@grpc/grpc-js";
import {
  type GetMeRequest,
  GetMeRequestSchema,
  type GetMeResponse,
  UserService,
} from "@protomesh/contracts/user/v1/user_pb";
import { deserializeGetMeResponse, GET_ME_PATH, serializeGetMeRequest } from "./getme.ts";

/** A GetMe caller usable directly as `runLoad({ call })`, with `close()` to release its connections. */
export type GetMeCall = (() => Promise<GetMeResponse>) & { close(): void };

/** Options shared by every client factory. */
export interface ClientOptions {
  /** Sent with every call, e.g. `{ authorization: "Bearer …" }`. */
  headers?: Record<string, string>;
  /** Per-call deadline, so a stuck server fails calls instead of stalling a load run. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;

function connectCall(transport: Transport, opts: ClientOptions, close: () => void): GetMeCall {
  const client = createClient(UserService, transport);
  const callOptions = {
    timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    ...(opts.headers ? { headers: opts.headers } : {}),
  };
  return Object.assign(() => client.getMe({}, callOptions), { close });
}

// A private keep-alive agent per client: connections are reused like a browser's, and close() can
// destroy them instead of leaving sockets that keep the process alive.
function http1Agent(): http.Agent {
  return new http.Agent({ keepAlive: true });
}

/** Connect protocol, JSON, over HTTP/1.1: what a browser using connect-web sends by default. */
export function connectJsonClient(baseUrl: string, opts: ClientOptions = {}): GetMeCall {
  const agent = http1Agent();
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "1.1",
    useBinaryFormat: false,
    nodeOptions: { agent },
  });
  return connectCall(transport, opts, () => agent.destroy());
}

/** gRPC-web, binary, over HTTP/1.1: what a browser using grpc-web sends. */
export function grpcWebClient(baseUrl: string, opts: ClientOptions = {}): GetMeCall {
  const agent = http1Agent();
  const transport = createGrpcWebTransport({
    baseUrl,
    httpVersion: "1.1",
    useBinaryFormat: true,
    nodeOptions: { agent },
  });
  return connectCall(transport, opts, () => agent.destroy());
}

/** gRPC over HTTP/2 (h2c) through connect-node's client (v2 has no httpVersion option: gRPC is always h2). */
export function connectGrpcClient(baseUrl: string, opts: ClientOptions = {}): GetMeCall {
  const sessionManager = new Http2SessionManager(baseUrl);
  const transport = createGrpcTransport({ baseUrl, sessionManager });
  return connectCall(transport, opts, () => sessionManager.abort());
}

/** Raw grpc-js client on the hand-written method path: the same stack the services use between themselves. */
export function grpcJsClient(address: string, opts: ClientOptions = {}): GetMeCall {
  // grpc-js takes host:port; accept a URL too so every factory can be fed the same baseUrl.
  const target = address.replace(/^https?:\/\//, "").replace(/\/+$/, "");
  const client = new Client(target, credentials.createInsecure());
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const request: GetMeRequest = create(GetMeRequestSchema);
  const headers = Object.entries(opts.headers ?? {});

  const call = (): Promise<GetMeResponse> =>
    new Promise((resolve, reject) => {
      // Metadata is mutated by grpc-js during the call, so each call gets its own.
      const metadata = new Metadata();
      for (const [key, value] of headers) metadata.set(key, value);
      client.makeUnaryRequest(
        GET_ME_PATH,
        serializeGetMeRequest,
        deserializeGetMeResponse,
        request,
        metadata,
        { deadline: Date.now() + timeoutMs },
        (err, res) => (err || !res ? reject(err ?? new Error("GetMe: empty response")) : resolve(res)),
      );
    });
  return Object.assign(call, { close: () => client.close() });
}
