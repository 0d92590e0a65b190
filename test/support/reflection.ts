// A grpcurl-style reflection client: what an operator's tool does, so tests can walk a
// service with nothing but its address.
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { createFileRegistry, type FileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";

const require = createRequire(import.meta.url);
const protoRoot = join(dirname(require.resolve("@grpc/reflection")), "../proto");

type ReflectionResponse = {
  listServicesResponse?: { service: { name: string }[] };
  fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
  errorResponse?: { errorCode: number; errorMessage: string };
};

/** Sends reflection requests over one stream, as grpcurl does, for version v1 or v1alpha. */
export function reflectionClient(address: string, version: "v1" | "v1alpha" = "v1") {
  const pkg = loadSync(join(protoRoot, `grpc/reflection/${version}/reflection.proto`), { keepCase: false });
  const def = pkg[`grpc.reflection.${version}.ServerReflection`] as grpc.ServiceDefinition;
  const Client = grpc.makeGenericClientConstructor(def, "ServerReflection");
  const client = new Client(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    serverReflectionInfo(): grpc.ClientDuplexStream<object, ReflectionResponse>;
  };
  const ask = (request: object) =>
    new Promise<ReflectionResponse>((resolve, reject) => {
      const stream = client.serverReflectionInfo();
      stream.once("data", (res: ReflectionResponse) => {
        resolve(res);
        stream.end();
      });
      stream.once("error", reject);
      stream.write(request);
    });
  return {
    async listServices(): Promise<string[]> {
      const res = await ask({ listServices: "*" });
      return (res.listServicesResponse?.service ?? []).map((s) => s.name).sort();
    },
    /** The file defining the symbol plus its dependencies, as a registry. */
    async describe(symbol: string): Promise<FileRegistry> {
      const res = await ask({ fileContainingSymbol: symbol });
      if (res.errorResponse) throw new Error(res.errorResponse.errorMessage);
      const files = (res.fileDescriptorResponse?.fileDescriptorProto ?? []).map((b) =>
        fromBinary(FileDescriptorProtoSchema, b),
      );
      const byName = new Map(files.map((f) => [f.name, f]));
      // Fetch whatever the response left out, as grpcurl does for transitive imports.
      for (let i = 0; i < files.length; i++) {
        for (const dep of files[i]?.dependency ?? []) {
          if (byName.has(dep)) continue;
          const more = await ask({ fileByFilename: dep });
          for (const b of more.fileDescriptorResponse?.fileDescriptorProto ?? []) {
            const f = fromBinary(FileDescriptorProtoSchema, b);
            if (!byName.has(f.name)) {
              byName.set(f.name, f);
              files.push(f);
            }
          }
        }
      }
      const root = files[0];
      if (!root) throw new Error(`no file for ${symbol}`);
      return createFileRegistry(root, (name) => byName.get(name));
    },
    close: () => client.close(),
  };
}
