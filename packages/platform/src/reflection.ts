import { create, type DescFile, type DescService, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { loadFileDescriptorSetFromBuffer } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";

/** The files that define these services and everything they import, dependencies first. */
export function descriptorSet(services: DescService[]): Uint8Array {
  const files = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (files.has(file.name)) return;
    file.dependencies.forEach(visit);
    files.set(file.name, file);
  };
  for (const s of services) visit(s.file);
  return toBinary(
    FileDescriptorSetSchema,
    create(FileDescriptorSetSchema, { file: [...files.values()].map((f) => f.proto) }),
  );
}

/**
 * Server reflection (v1 and v1alpha) from the descriptors embedded in the generated code, so
 * grpcurl can list, describe and call without proto files.
 */
export function addReflection(server: grpc.Server, services: DescService[]): void {
  const pkg = loadFileDescriptorSetFromBuffer(Buffer.from(descriptorSet(services)));
  new ReflectionService(pkg).addToServer(server);
}
