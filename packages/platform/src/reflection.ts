import {
  create,
  type DescFile,
  type DescMethod,
  type DescService,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { Health } from "@protomesh/contracts/grpc/health/v1/health_pb";
import {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "@protomesh/contracts/grpc/reflection/v1/reflection_pb";
import { ServerReflection as ServerReflectionV1Alpha } from "@protomesh/contracts/grpc/reflection/v1alpha/reflection_pb";

/** The files that define these services and everything they import, dependencies first. */
export function descriptorFiles(services: DescService[]): DescFile[] {
  const files = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (files.has(file.name)) return;
    file.dependencies.forEach(visit);
    files.set(file.name, file);
  };
  for (const s of services) visit(s.file);
  return [...files.values()];
}

type ResponseInit = MessageInitShape<typeof ServerReflectionResponseSchema>;

/** What reflection answers from: every file by name and by the symbols it defines. */
type ReflectionIndex = {
  services: string[];
  files: Map<string, { file: DescFile; bytes: Uint8Array }>;
  /** Fully-qualified name of any symbol (message, field, enum value, method…) → its file. */
  symbols: Map<string, DescFile>;
  /** Extended message → extension number → file declaring the extension. */
  extensions: Map<string, Map<number, DescFile>>;
};

function buildIndex(services: DescService[]): ReflectionIndex {
  const index: ReflectionIndex = {
    services: [...new Set(services.map((s) => s.typeName))].sort(),
    files: new Map(),
    symbols: new Map(),
    extensions: new Map(),
  };
  for (const file of descriptorFiles(services)) {
    // The FileDescriptorProto embedded in the generated code, re-encoded by protobuf-es with its
    // unknown fields: fully-qualified type names and every custom option (protovalidate rules,
    // our method options) intact, which proto-loader's and protobufjs' re-encodings are not.
    index.files.set(file.proto.name, { file, bytes: toBinary(FileDescriptorProtoSchema, file.proto) });
    const add = (name: string) => index.symbols.set(name, file);
    for (const type of nestedTypes(file)) {
      add(type.typeName);
      switch (type.kind) {
        case "message":
          for (const field of type.fields) add(`${type.typeName}.${field.name}`);
          for (const oneof of type.oneofs) add(`${type.typeName}.${oneof.name}`);
          break;
        case "enum": {
          // Enum values are scoped like C++ enumerators: siblings of their enum, not children.
          const scope = type.typeName.slice(0, type.typeName.length - type.name.length);
          for (const value of type.values) add(`${scope}${value.name}`);
          break;
        }
        case "service":
          for (const method of type.methods) add(`${type.typeName}.${method.name}`);
          break;
        case "extension": {
          const byNumber = index.extensions.get(type.extendee.typeName) ?? new Map<number, DescFile>();
          byNumber.set(type.number, file);
          index.extensions.set(type.extendee.typeName, byNumber);
          break;
        }
      }
    }
  }
  return index;
}

/**
 * The named file, then those of its transitive imports not yet sent on this stream, as a Go
 * server answers: a client keeps what it received, so repeating descriptor.proto and the
 * protovalidate rules with every answer would only waste bytes.
 */
function withDependencies(index: ReflectionIndex, file: DescFile, sent: Set<string>): ResponseInit {
  const out: Uint8Array[] = [];
  const queue = [file];
  for (let f = queue.shift(); f; f = queue.shift()) {
    const entry = index.files.get(f.proto.name);
    if (!entry) continue;
    if (out.length === 0 || !sent.has(f.proto.name)) {
      sent.add(f.proto.name);
      out.push(entry.bytes);
    }
    queue.push(...f.dependencies);
  }
  return { messageResponse: { case: "fileDescriptorResponse", value: { fileDescriptorProto: out } } };
}

function notFound(message: string): ResponseInit {
  return {
    messageResponse: {
      case: "errorResponse",
      value: { errorCode: grpc.status.NOT_FOUND, errorMessage: message },
    },
  };
}

function answer(index: ReflectionIndex, request: ServerReflectionRequest, sent: Set<string>): ResponseInit {
  const ask = request.messageRequest;
  switch (ask.case) {
    case "listServices":
      return {
        messageResponse: {
          case: "listServicesResponse",
          value: { service: index.services.map((name) => ({ name })) },
        },
      };
    case "fileByFilename": {
      const entry = index.files.get(ask.value);
      return entry ? withDependencies(index, entry.file, sent) : notFound(`file not found: ${ask.value}`);
    }
    case "fileContainingSymbol": {
      const file = index.symbols.get(ask.value);
      return file ? withDependencies(index, file, sent) : notFound(`symbol not found: ${ask.value}`);
    }
    case "fileContainingExtension": {
      const { containingType, extensionNumber } = ask.value;
      const file = index.extensions.get(containingType)?.get(extensionNumber);
      return file
        ? withDependencies(index, file, sent)
        : notFound(`extension ${extensionNumber} of ${containingType} not found`);
    }
    case "allExtensionNumbersOfType": {
      if (!index.symbols.has(ask.value)) return notFound(`type not found: ${ask.value}`);
      const numbers = [...(index.extensions.get(ask.value)?.keys() ?? [])].sort((a, b) => a - b);
      return {
        messageResponse: {
          case: "allExtensionNumbersResponse",
          value: { baseTypeName: ask.value, extensionNumber: numbers },
        },
      };
    }
    default:
      return {
        messageResponse: {
          case: "errorResponse",
          value: { errorCode: grpc.status.INVALID_ARGUMENT, errorMessage: "empty reflection request" },
        },
      };
  }
}

/**
 * A grpc-js definition of ServerReflectionInfo at the given method's path. v1alpha's messages
 * are v1's under another package name (same fields and numbers, hence the same bytes), so both
 * versions are served with v1's schemas.
 */
function reflectionDefinition(method: DescMethod): grpc.ServiceDefinition {
  return {
    ServerReflectionInfo: {
      path: `/${method.parent.typeName}/${method.name}`,
      requestStream: true,
      responseStream: true,
      requestSerialize: (m: ServerReflectionRequest) =>
        Buffer.from(toBinary(ServerReflectionRequestSchema, m)),
      requestDeserialize: (b: Buffer) => fromBinary(ServerReflectionRequestSchema, b),
      responseSerialize: (m: ServerReflectionResponse) =>
        Buffer.from(toBinary(ServerReflectionResponseSchema, m)),
      responseDeserialize: (b: Buffer) => fromBinary(ServerReflectionResponseSchema, b),
    },
  };
}

/**
 * Server reflection (v1 and v1alpha) from the descriptors embedded in the generated code, so
 * grpcurl can list, describe and call without proto files. Lists the given services plus
 * grpc.health.v1.Health and both reflection services, as a Go server does: the platform always
 * serves health next to reflection.
 */
export function addReflection(server: grpc.Server, services: DescService[]): void {
  const index = buildIndex([...services, Health, ServerReflection, ServerReflectionV1Alpha]);
  const serverReflectionInfo: grpc.handleBidiStreamingCall<
    ServerReflectionRequest,
    ServerReflectionResponse
  > = (call) => {
    // Per stream, like the Go server: which files this client already has.
    const sent = new Set<string>();
    call.on("data", (request: ServerReflectionRequest) => {
      const response = answer(index, request, sent);
      call.write(
        create(ServerReflectionResponseSchema, {
          ...response,
          validHost: request.host,
          originalRequest: request,
        }),
      );
    });
    call.on("end", () => call.end());
  };
  for (const method of [
    ServerReflection.method.serverReflectionInfo,
    ServerReflectionV1Alpha.method.serverReflectionInfo,
  ]) {
    server.addService(reflectionDefinition(method), { ServerReflectionInfo: serverReflectionInfo });
  }
}
