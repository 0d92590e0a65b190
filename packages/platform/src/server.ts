import { randomUUID } from "node:crypto";
import { type EventEmitter, once } from "node:events";
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
import { Access, ADMIN_ROLE, accessOf } from "./access.ts";
import type { AccessTokenVerifier, UserIdentity } from "./caller.ts";
import { type CallContext, inboundCall } from "./context.ts";
import { Code, ConnectError, toPublicError } from "./errors.ts";
import type { Logger } from "./logger.ts";
import { rpcHandled, rpcSeconds } from "./metrics.ts";
import { validateRequest } from "./validation.ts";

type UnaryImpl<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => Promise<MessageInitShape<O>>;
type StreamImpl<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => AsyncIterable<MessageInitShape<O>>;

/** The handlers of a service, typed from its generated descriptor. */
export type ServiceHandlers<S extends DescService> = {
  [K in keyof S["method"]]: S["method"][K] extends DescMethodUnary<infer I, infer O>
    ? UnaryImpl<I, O>
    : S["method"][K] extends DescMethodServerStreaming<infer I, infer O>
      ? StreamImpl<I, O>
      : never;
};

/** A service descriptor with its handlers, ready to be served. */
export interface ServiceBinding {
  service: DescService;
  handlers: Record<string, unknown>;
}

/** Pairs a generated service with handlers whose types it checks. */
export function bindService<S extends DescService>(service: S, handlers: ServiceHandlers<S>): ServiceBinding {
  return { service, handlers: handlers as Record<string, unknown> };
}

/** How a server learns who is calling. */
export interface CallerAuth {
  accessTokens: AccessTokenVerifier;
  /** Returns the calling service's name from a mesh token, or throws UNAUTHENTICATED. */
  meshToken: (token: string) => Promise<string>;
}

export const MESH_TOKEN_HEADER = "x-mesh-token";
export const REQUEST_ID_HEADER = "x-request-id";
const SAFE_REQUEST_ID = /^[\w.:-]{1,128}$/;

function first(md: grpc.Metadata, key: string): string | undefined {
  const v = md.get(key)[0];
  return typeof v === "string" && v !== "" ? v : undefined;
}

function bearer(md: grpc.Metadata): string | undefined {
  const h = first(md, "authorization");
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)$/i.exec(h);
  if (!m) throw new ConnectError("authorization must be a Bearer token", Code.Unauthenticated);
  return m[1];
}

/** Checks the caller against the method's access level before any handler runs. */
async function authorize(
  level: Access,
  md: grpc.Metadata,
  auth: CallerAuth,
): Promise<{ user: UserIdentity | undefined; service: string | undefined; accessToken: string | undefined }> {
  const mesh = first(md, MESH_TOKEN_HEADER);
  const service = mesh ? await auth.meshToken(mesh) : undefined;
  let user: UserIdentity | undefined;
  let accessToken: string | undefined;
  if (level === Access.USER || level === Access.ADMIN) {
    accessToken = bearer(md);
    if (accessToken) user = await auth.accessTokens.verify(accessToken);
    if (!user && !service) throw new ConnectError("missing access token", Code.Unauthenticated);
    if (level === Access.ADMIN && !service && !user?.roles.includes(ADMIN_ROLE)) {
      throw new ConnectError("this method needs the admin role", Code.PermissionDenied);
    }
  } else if (level === Access.INTERNAL && !service) {
    throw new ConnectError("this method is internal to the mesh", Code.PermissionDenied);
  }
  return { user, service, accessToken };
}

function toGrpcError(err: ConnectError): Partial<grpc.StatusObject> & Error {
  return Object.assign(new Error(err.rawMessage), {
    code: err.code as number as grpc.status,
    details: err.rawMessage,
  });
}

function clientIp(call: { metadata: grpc.Metadata; getPeer(): string }): string {
  const forwarded = first(call.metadata, "x-forwarded-for");
  if (forwarded) return forwarded.split(",")[0]?.trim() ?? forwarded;
  return call
    .getPeer()
    .replace(/^ipv[46]:/, "")
    .replace(/:\d+$/, "");
}

/**
 * Builds the grpc-js definition of a service: binary (de)serialisation from the protobuf-es
 * descriptors, and every handler wrapped so that access is enforced, the request validated,
 * the handler awaited, and whatever it throws mapped to a safe status.
 */
function toGrpcService(binding: ServiceBinding, auth: CallerAuth, log: Logger) {
  const definition: Record<
    string,
    grpc.MethodDefinition<MessageShape<DescMessage>, MessageShape<DescMessage>>
  > = {};
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const method of binding.service.methods) {
    const impl = binding.handlers[method.localName];
    if (typeof impl !== "function")
      throw new Error(`${binding.service.typeName}.${method.name} has no handler`);
    const streaming = method.methodKind === "server_streaming";
    if (method.methodKind !== "unary" && !streaming) {
      throw new Error(`${method.methodKind} methods are not supported (${method.name})`);
    }
    definition[method.name] = {
      path: `/${binding.service.typeName}/${method.name}`,
      requestStream: false,
      responseStream: streaming,
      requestSerialize: (m: MessageShape<DescMessage>) => Buffer.from(toBinary(method.input, m)),
      requestDeserialize: (b: Buffer) => fromBinary(method.input, b),
      responseSerialize: (m: MessageShape<DescMessage>) => Buffer.from(toBinary(method.output, m)),
      responseDeserialize: (b: Buffer) => fromBinary(method.output, b),
      originalName: method.localName,
    };
    const run = createCallRunner(binding.service, method, auth, log);
    implementation[method.name] = streaming
      ? (call: grpc.ServerWritableStream<MessageShape<DescMessage>, unknown>) => {
          run(call, async (ctx) => {
            for await (const out of (impl as StreamImpl<DescMessage, DescMessage>)(call.request, ctx)) {
              if (call.cancelled) return;
              if (!call.write(create(method.output, out))) await once(call, "drain", { signal: ctx.signal });
            }
          }).then(
            () => call.end(),
            (err: ConnectError) => call.destroy(toGrpcError(err)),
          );
        }
      : (
          call: grpc.ServerUnaryCall<MessageShape<DescMessage>, unknown>,
          callback: grpc.sendUnaryData<unknown>,
        ) => {
          run(call, async (ctx) =>
            create(method.output, await (impl as UnaryImpl<DescMessage, DescMessage>)(call.request, ctx)),
          ).then(
            (res) => callback(null, res),
            (err: ConnectError) => callback(toGrpcError(err)),
          );
        };
  }
  return { definition, implementation };
}

type AnyCall =
  | grpc.ServerUnaryCall<MessageShape<DescMessage>, unknown>
  | grpc.ServerWritableStream<MessageShape<DescMessage>, unknown>;

function createCallRunner(service: DescService, method: DescMethod, auth: CallerAuth, log: Logger) {
  const level = accessOf(method);
  const labels = { service: service.typeName, method: method.name };
  return async <T>(call: AnyCall, body: (ctx: CallContext) => Promise<T>): Promise<T> => {
    const started = performance.now();
    const offered = first(call.metadata, REQUEST_ID_HEADER);
    const requestId = offered && SAFE_REQUEST_ID.test(offered) ? offered : randomUUID();
    const controller = new AbortController();
    const onCancel = () => controller.abort(new ConnectError("the call was cancelled", Code.Canceled));
    (call as EventEmitter).once("cancelled", onCancel);
    const deadline = call.getDeadline();
    const callLog = log.child({ requestId, rpc: `${service.typeName}/${method.name}` });
    let code = Code.Internal as number;
    try {
      const who = await authorize(level, call.metadata, auth);
      validateRequest(method.input, call.request);
      const ctx: CallContext = {
        requestId,
        ...who,
        clientIp: clientIp(call),
        deadline:
          deadline instanceof Date ? deadline : Number.isFinite(deadline) ? new Date(deadline) : undefined,
        signal: controller.signal,
        log: callLog,
      };
      const result = await inboundCall.run({ call, ctx }, () => body(ctx));
      code = 0;
      return result;
    } catch (err) {
      const safe = toPublicError(err, callLog);
      code = safe.code;
      throw safe;
    } finally {
      (call as EventEmitter).off("cancelled", onCancel);
      rpcHandled.inc({ ...labels, code: grpc.status[code] ?? String(code) });
      rpcSeconds.observe(labels, (performance.now() - started) / 1000);
    }
  };
}

/** Adds services to a grpc-js server with the platform's checks around every handler. */
export function addServices(
  server: grpc.Server,
  bindings: ServiceBinding[],
  auth: CallerAuth,
  log: Logger,
): void {
  for (const binding of bindings) {
    const { definition, implementation } = toGrpcService(binding, auth, log);
    server.addService(definition as grpc.ServiceDefinition, implementation);
  }
}
