// A grpcurl-style reflection client: what an operator's tool does, so tests and scripts/grpc.ts
// can walk a service with nothing but its address. It speaks reflection with the protobuf-es
// code generated from grpc's reflection.proto, so it loads no proto files either.
import { create, createFileRegistry, type FileRegistry, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "@protomesh/contracts/grpc/reflection/v1/reflection_pb";
import { ServerReflection as ServerReflectionV1Alpha } from "@protomesh/contracts/grpc/reflection/v1alpha/reflection_pb";

export type ReflectionVersion = "v1" | "v1alpha";

/** An error the server answered a reflection request with (e.g. NOT_FOUND for an unknown symbol). */
export class ReflectionError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
    this.name = "ReflectionError";
  }
}

export type ReflectionClientOptions = {
  /** Which reflection service to ask; v1 unless told. */
  version?: ReflectionVersion;
  /** Sent with the reflection stream, e.g. an authorization header. */
  metadata?: grpc.Metadata;
};

export type ReflectionClient = {
  /** Fully-qualified names of the services the server lists, sorted. */
  listServices(): Promise<string[]>;
  /** A registry of the file defining a symbol (service, method, message…) and all it imports. */
  describe(symbol: string): Promise<FileRegistry>;
  /** A registry of the named file and all it imports. */
  describeFile(name: string): Promise<FileRegistry>;
  close(): void;
};

type Request = ServerReflectionRequest["messageRequest"];

/** Opens a reflection client for address; requests share one stream, as grpcurl's do. */
export function createReflectionClient(
  address: string,
  options: ReflectionClientOptions = {},
): ReflectionClient {
  const method = (options.version === "v1alpha" ? ServerReflectionV1Alpha : ServerReflection).method
    .serverReflectionInfo;
  const path = `/${method.parent.typeName}/${method.name}`;
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  // Every file received on the stream: servers send each import only once per stream.
  const files = new Map<string, FileDescriptorProto>();
  const pending: { resolve(r: ServerReflectionResponse): void; reject(e: Error): void }[] = [];
  let stream: grpc.ClientDuplexStream<ServerReflectionRequest, ServerReflectionResponse> | undefined;

  const open = () => {
    // v1alpha's messages are v1's under another package (same bytes), so v1's schemas serve both.
    const s = client.makeBidiStreamRequest(
      path,
      (m: ServerReflectionRequest) => Buffer.from(toBinary(ServerReflectionRequestSchema, m)),
      (b: Buffer) => fromBinary(ServerReflectionResponseSchema, b),
      options.metadata ?? new grpc.Metadata(),
    );
    // The server answers in order, so each answer belongs to the oldest open request.
    s.on("data", (res: ServerReflectionResponse) => pending.shift()?.resolve(res));
    const fail = (err: Error) => {
      if (stream === s) stream = undefined;
      for (const p of pending.splice(0)) p.reject(err);
    };
    s.on("error", fail);
    s.on("end", () => fail(new Error("reflection stream ended before answering")));
    return s;
  };

  const ask = (request: Request) =>
    new Promise<ServerReflectionResponse>((resolve, reject) => {
      stream ??= open();
      pending.push({ resolve, reject });
      stream.write(create(ServerReflectionRequestSchema, { messageRequest: request }));
    });

  const fileResponse = async (request: Request): Promise<FileDescriptorProto> => {
    const res = (await ask(request)).messageResponse;
    if (res.case === "errorResponse") throw new ReflectionError(res.value.errorCode, res.value.errorMessage);
    if (res.case !== "fileDescriptorResponse") throw new Error(`unexpected reflection answer ${res.case}`);
    let first: FileDescriptorProto | undefined;
    for (const bytes of res.value.fileDescriptorProto) {
      const file = fromBinary(FileDescriptorProtoSchema, bytes);
      first ??= file;
      files.set(file.name, file);
    }
    if (!first) throw new Error("reflection answered with no file");
    return first;
  };

  // Fetches whatever imports the server left out (sent earlier on another stream, or a server
  // that sends only the file itself), as grpcurl does, then links everything.
  const registryOf = async (root: FileDescriptorProto): Promise<FileRegistry> => {
    const seen = new Set<string>();
    const queue = [...root.dependency];
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      if (seen.has(name)) continue;
      seen.add(name);
      const file = files.get(name) ?? (await fileResponse({ case: "fileByFilename", value: name }));
      queue.push(...file.dependency);
    }
    return createFileRegistry(root, (name) => files.get(name));
  };

  return {
    async listServices() {
      const res = (await ask({ case: "listServices", value: "*" })).messageResponse;
      if (res.case === "errorResponse")
        throw new ReflectionError(res.value.errorCode, res.value.errorMessage);
      if (res.case !== "listServicesResponse") throw new Error(`unexpected reflection answer ${res.case}`);
      return res.value.service.map((s) => s.name).sort();
    },
    async describe(symbol) {
      return registryOf(await fileResponse({ case: "fileContainingSymbol", value: symbol }));
    },
    async describeFile(name) {
      return registryOf(await fileResponse({ case: "fileByFilename", value: name }));
    },
    close() {
      stream?.end();
      client.close();
    },
  };
}
