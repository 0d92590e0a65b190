import { type DescFile, type DescService, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";

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

/**
 * Server reflection (v1 and v1alpha) from the descriptors embedded in the generated code, so
 * grpcurl can list, describe and call without proto files. ReflectionService reads only the
 * `fileDescriptorProtos` of what it is given, so it gets our descriptors byte for byte instead
 * of a proto-loader re-encoding (which writes relative type names that strict clients reject).
 */
export function addReflection(server: grpc.Server, services: DescService[]): void {
  const fileDescriptorProtos = descriptorFiles(services).map((f) =>
    Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)),
  );
  new ReflectionService({ protomesh: { fileDescriptorProtos } } as never).addToServer(server);
}
