import { randomUUID } from "node:crypto";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type DescService,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { inboundCall, REQUEST_ID_HEADER } from "./context.ts";
import { type Code, type ConnectError, errorWithDetails, STATUS_DETAILS_TRAILER } from "./errors.ts";
import { MESH_TOKEN_HEADER } from "./server.ts";

/** Per-call options; deadline and cancellation of the inbound call apply on top of these. */
export interface CallOptions {
  /** Unary calls default to the client's defaultTimeoutMs; streams have none unless set. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Call on behalf of this user; defaults to the token of the call being served, if any. */
  accessToken?: string;
  /** Extra metadata, e.g. the request id and client address a gateway forwards. */
  headers?: Record<string, string>;
}

/** A typed client of a generated service over grpc-js. */
export type ServiceClient<S extends DescService> = {
  [K in keyof S["method"]]: S["method"][K] extends DescMethodUnary<infer I, infer O>
    ? (request: MessageInitShape<I>, options?: CallOptions) => Promise<MessageShape<O>>
    : S["method"][K] extends DescMethodServerStreaming<infer I, infer O>
      ? (request: MessageInitShape<I>, options?: CallOptions) => AsyncIterable<MessageShape<O>>
      : never;
};

export interface ClientOptions {
  /** Mesh credentials: required to call INTERNAL methods. */
  mesh?: { token(): Promise<string> };
  /** Deadline of unary calls that set none (10 s). Server streams get no default deadline. */
  defaultTimeoutMs?: number;
  /**
   * Wait (within the deadline) for the target to be reachable instead of failing at once:
   * right for calls between services, which should ride out a peer's restart.
   */
  waitForReady?: boolean;
}

/** Maps a grpc-js error to the ConnectError that handlers and tests reason about. */
export function fromGrpcError(err: grpc.ServiceError): ConnectError {
  const status = err.metadata?.get(STATUS_DETAILS_TRAILER)[0];
  return errorWithDetails(
    err.details || err.message,
    err.code as number as Code,
    Buffer.isBuffer(status) ? status : undefined,
  );
}

/**
 * Channel settings for every client: round-robin over all addresses a name resolves to, so
 * `dns:///user:50052` against a headless Service balances across its pods.
 */
export const channelOptions: grpc.ChannelOptions = {
  "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  // grpc's default backs off up to 2 minutes: far too long to notice a restarted pod is back.
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 2_000,
  // channelz keeps a trace of every call: a cost on each, for a debugger nobody here attaches.
  "grpc.enable_channelz": 0,
};

/**
 * Creates a typed grpc-js client. Calls made while serving another call inherit its deadline,
 * cancellation, request id and access token (grpc-js `parent` propagation).
 */
export function createServiceClient<S extends DescService>(
  service: S,
  target: string,
  options: ClientOptions = {},
): ServiceClient<S> & { close(): void; waitForReady(timeoutMs: number): Promise<boolean> } {
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), channelOptions);
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 10_000;

  const prepare = async (opts: CallOptions | undefined, defaultMs?: number) => {
    const md = new grpc.Metadata({ waitForReady: options.waitForReady ?? false });
    const inbound = inboundCall.getStore();
    if (options.mesh) md.set(MESH_TOKEN_HEADER, await options.mesh.token());
    const token = opts?.accessToken ?? inbound?.ctx.accessToken;
    if (token) md.set("authorization", `Bearer ${token}`);
    md.set(REQUEST_ID_HEADER, inbound?.ctx.requestId ?? randomUUID());
    if (inbound) md.set("x-forwarded-for", inbound.ctx.clientIp);
    for (const [k, v] of Object.entries(opts?.headers ?? {})) md.set(k, v);
    const timeoutMs = opts?.timeoutMs ?? defaultMs;
    const callOptions: grpc.CallOptions = timeoutMs === undefined ? {} : { deadline: Date.now() + timeoutMs };
    if (inbound) {
      callOptions.parent = inbound.call;
      callOptions.propagate_flags = grpc.propagate.DEADLINE | grpc.propagate.CANCELLATION;
    }
    return { md, callOptions };
  };

  const methods: Record<string, unknown> = {};
  for (const method of service.methods) {
    const path = `/${service.typeName}/${method.name}`;
    const serialize = (m: MessageShape<DescMessage>) => Buffer.from(toBinary(method.input, m));
    const deserialize = (b: Buffer) => fromBinary(method.output, b);
    if (method.methodKind === "unary") {
      methods[method.localName] = async (request: MessageInitShape<DescMessage>, opts?: CallOptions) => {
        const { md, callOptions } = await prepare(opts, defaultTimeoutMs);
        opts?.signal?.throwIfAborted();
        return new Promise((resolve, reject) => {
          const signal = opts?.signal;
          const cancel = () => call.cancel();
          const call = client.makeUnaryRequest(
            path,
            serialize,
            deserialize,
            create(method.input, request),
            md,
            callOptions,
            (err, res) => {
              // A long-lived signal must not collect one listener per call.
              signal?.removeEventListener("abort", cancel);
              if (err) reject(fromGrpcError(err));
              else resolve(res);
            },
          );
          signal?.addEventListener("abort", cancel, { once: true });
        });
      };
    } else if (method.methodKind === "server_streaming") {
      methods[method.localName] = (request: MessageInitShape<DescMessage>, opts?: CallOptions) =>
        streamCall(client, path, method, serialize, deserialize, request, prepare, opts);
    }
  }
  return Object.assign(methods as ServiceClient<S>, {
    close: () => client.close(),
    /** Resolves true once the channel is connected, false if it is not within the timeout. */
    waitForReady: (timeoutMs: number) =>
      new Promise<boolean>((resolve) => client.waitForReady(Date.now() + timeoutMs, (err) => resolve(!err))),
  });
}

async function* streamCall(
  client: grpc.Client,
  path: string,
  method: DescMethod,
  serialize: (m: MessageShape<DescMessage>) => Buffer,
  deserialize: (b: Buffer) => MessageShape<DescMessage>,
  request: MessageInitShape<DescMessage>,
  prepare: (o: CallOptions | undefined) => Promise<{ md: grpc.Metadata; callOptions: grpc.CallOptions }>,
  opts: CallOptions | undefined,
): AsyncGenerator<MessageShape<DescMessage>> {
  // No default deadline for a stream: it lives until either side ends it.
  const { md, callOptions } = await prepare(opts);
  opts?.signal?.throwIfAborted();
  const stream = client.makeServerStreamRequest(
    path,
    serialize,
    deserialize,
    create(method.input, request),
    md,
    callOptions,
  );
  const cancel = () => stream.cancel();
  opts?.signal?.addEventListener("abort", cancel, { once: true });
  try {
    for await (const message of stream) yield message as MessageShape<DescMessage>;
  } catch (err) {
    throw "code" in (err as object) ? fromGrpcError(err as grpc.ServiceError) : err;
  } finally {
    opts?.signal?.removeEventListener("abort", cancel);
    stream.cancel();
  }
}
