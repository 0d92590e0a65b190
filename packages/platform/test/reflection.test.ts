import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fromBinary, fromJson, toBinary, toJson } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { file_protomesh_user_v1_user, UserService } from "@protomesh/contracts/user/v1/user_pb";
import { createReflectionClient, ReflectionError } from "@protomesh/devkit";
import { HealthImplementation } from "grpc-health-check";
import { addReflection } from "../src/reflection.ts";

const root = join(import.meta.dirname, "../../..");

/** Every type name a descriptor refers to; protoc writes them fully qualified (".pkg.Type"). */
function typeReferences(file: FileDescriptorProto): string[] {
  const refs: string[] = [];
  const visit = (messages: FileDescriptorProto["messageType"]) => {
    for (const m of messages) {
      for (const f of m.field) if (f.typeName) refs.push(f.typeName);
      visit(m.nestedType);
    }
  };
  visit(file.messageType);
  for (const s of file.service) for (const m of s.method) refs.push(m.inputType, m.outputType);
  return refs;
}

/** Runs scripts/grpc.ts as an operator would; resolves with its exit code and output. */
function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(
      process.execPath,
      ["--import", "tsx", "scripts/grpc.ts", ...args],
      { cwd: root },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
    ),
  );
}

describe("server reflection", () => {
  const server = new grpc.Server();
  let addr = "";

  before(async () => {
    new HealthImplementation({ "": "SERVING" }).addToServer(server);
    // No UserService handlers: reflection needs only the descriptor.
    addReflection(server, [UserService]);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    addr = `127.0.0.1:${port}`;
  });

  after(() => server.forceShutdown());

  for (const version of ["v1", "v1alpha"] as const) {
    test(`over ${version}, a client with nothing but reflection lists the services and checks health`, async () => {
      const reflection = createReflectionClient(addr, { version });
      const client = new grpc.Client(addr, grpc.credentials.createInsecure());
      try {
        assert.deepEqual(await reflection.listServices(), [
          "grpc.health.v1.Health",
          "grpc.reflection.v1.ServerReflection",
          "grpc.reflection.v1alpha.ServerReflection",
          "protomesh.user.v1.UserService",
        ]);

        // The registry holds only what reflection sent, not the generated code's descriptors.
        const registry = await reflection.describe("grpc.health.v1.Health");
        const service = registry.getService("grpc.health.v1.Health");
        const check = service?.methods.find((m) => m.name === "Check");
        assert.ok(service && check, "Health.Check is described");
        const request = fromJson(check.input, { service: "" }, { registry });
        const response = await new Promise<ReturnType<typeof fromBinary<typeof check.output>>>(
          (resolve, reject) =>
            client.makeUnaryRequest(
              `/${service.typeName}/${check.name}`,
              (m: typeof request) => Buffer.from(toBinary(check.input, m)),
              (b: Buffer) => fromBinary(check.output, b),
              request,
              (err, res) => (err || !res ? reject(err) : resolve(res)),
            ),
        );
        assert.deepEqual(toJson(check.output, response, { registry }), { status: "SERVING" });
      } finally {
        client.close();
        reflection.close();
      }
    });
  }

  test("health and reflection descriptors are fully qualified and found by symbol and by file name", async () => {
    const reflection = createReflectionClient(addr);
    try {
      for (const [symbol, fileName] of [
        ["grpc.health.v1.Health.Watch", "grpc/health/v1/health.proto"],
        ["grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto"],
        ["grpc.reflection.v1alpha.ServerReflectionRequest", "grpc/reflection/v1alpha/reflection.proto"],
      ] as const) {
        const bySymbol = (await reflection.describe(symbol)).getFile(fileName);
        const byName = (await reflection.describeFile(fileName)).getFile(fileName);
        assert.ok(bySymbol && byName, `${symbol} is in ${fileName}`);
        assert.deepEqual(
          toBinary(FileDescriptorProtoSchema, bySymbol.proto),
          toBinary(FileDescriptorProtoSchema, byName.proto),
        );
        const refs = typeReferences(byName.proto);
        assert.ok(refs.length > 0);
        for (const ref of refs) assert.match(ref, /^\.grpc\./, `${fileName} refers to ${ref}`);
      }
      await assert.rejects(
        reflection.describe("grpc.health.v1.Nope"),
        (e) => e instanceof ReflectionError && e.code === grpc.status.NOT_FOUND,
      );
    } finally {
      reflection.close();
    }
  });

  test("our contracts are served byte for byte, custom options and protovalidate rules included", async () => {
    const reflection = createReflectionClient(addr);
    try {
      const registry = await reflection.describe("protomesh.user.v1.UserService");
      const reflected = registry.getFile(file_protomesh_user_v1_user.proto.name);
      assert.ok(reflected);
      assert.deepEqual(
        toBinary(FileDescriptorProtoSchema, reflected.proto),
        toBinary(FileDescriptorProtoSchema, file_protomesh_user_v1_user.proto),
      );
      assert.ok(registry.getFile("buf/validate/validate.proto"), "imports travel with the file");
    } finally {
      reflection.close();
    }
  });

  test("npm run grpc lists, describes and calls health through reflection", async () => {
    const list = await cli(addr, "list");
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(list.stdout.trim().split("\n"), [
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
      "protomesh.user.v1.UserService",
    ]);

    const described = await cli(addr, "describe", "grpc.health.v1.Health");
    assert.equal(described.code, 0, described.stderr);
    assert.match(
      described.stdout,
      /rpc Check \( \.grpc\.health\.v1\.HealthCheckRequest \) returns \( \.grpc\.health\.v1\.HealthCheckResponse \);/,
    );

    const check = await cli("-plaintext", "-d", '{"service":""}', addr, "grpc.health.v1.Health/Check");
    assert.equal(check.code, 0, check.stderr);
    assert.deepEqual(JSON.parse(check.stdout), { status: "SERVING" });
  });

  test("npm run grpc streams one JSON message per line and reports errors like grpcurl", async () => {
    // Watch never ends by itself: the deadline ends it after the first message.
    const watch = await cli("-max-time", "2", "-reflect-v1alpha", addr, "grpc.health.v1.Health/Watch");
    assert.deepEqual(
      watch.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l)),
      [{ status: "SERVING" }],
    );
    assert.match(watch.stderr, /Code: DeadlineExceeded/);
    assert.equal(watch.code, 64 + grpc.status.DEADLINE_EXCEEDED);

    const unknown = await cli("-d", '{"service":"nope"}', addr, "grpc.health.v1.Health/Check");
    assert.match(unknown.stderr, /Code: NotFound\n\s+Message: .*nope/);
    assert.equal(unknown.code, 64 + grpc.status.NOT_FOUND);

    // No handlers were registered: the call reaches the server, which has no such method.
    const unimplemented = await cli(addr, "protomesh.user.v1.UserService/GetMe");
    assert.match(unimplemented.stderr, /Code: Unimplemented/);
    assert.notEqual(unimplemented.code, 0);
  });
});
