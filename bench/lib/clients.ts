import * as http from "node:http";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { type GetMeResponse, UserService } from "@protomesh/contracts/user/v1/user_pb";

/** A GetMe caller usable directly as `runLoad({ call })`, with `close()` to release its connections. */
export type GetMeCall = (() => Promise<GetMeResponse>) & { close(): void };

/** Options of a client. */
export interface ClientOptions {
  /** Sent with every call, e.g. `{ authorization: "Bearer …" }`. */
  headers?: Record<string, string>;
  /** Per-call deadline, so a stuck server fails calls instead of stalling a load run. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** Connect protocol, JSON, over HTTP/1.1: what a browser using connect-web sends by default. */
export function connectJsonClient(baseUrl: string, opts: ClientOptions = {}): GetMeCall {
  // A private keep-alive agent: connections are reused like a browser's, and close() can destroy
  // them instead of leaving sockets that keep the process alive.
  const agent = new http.Agent({ keepAlive: true });
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "1.1",
    useBinaryFormat: false,
    nodeOptions: { agent },
  });
  const client = createClient(UserService, transport);
  const callOptions = {
    timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    ...(opts.headers ? { headers: opts.headers } : {}),
  };
  return Object.assign(() => client.getMe({}, callOptions), { close: () => agent.destroy() });
}
