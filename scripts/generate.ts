// Regenerates the TypeScript contracts from proto/ (or, with --check, fails if they are stale)
// and lints the contracts with buf.
//
// buf cannot fetch buf.validate from the registry here, so protoc compiles proto/ against the
// compiled descriptor that @bufbuild/protovalidate ships, into an image that buf lints and
// generates from.
//
// The grpc.health.v1, grpc.reflection and google.rpc protos ship as .proto files inside
// grpc-health-check, @grpc/reflection and google-proto-files; they are compiled here too (not
// linted: they are not ours), so reflection can serve their exact descriptors, clients can speak
// reflection without loading proto files, and error details (google.rpc.Status, RetryInfo) have
// the types every gRPC and Connect client knows.
import { execFileSync } from "node:child_process";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { create, type DescFile, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { ensureCommand } from "@protomesh/devkit";

const root = join(import.meta.dirname, "..");
const genDir = "packages/contracts/src/gen";
const check = process.argv.includes("--check");

function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

/** Writes buf.validate and the well-known types it imports as a FileDescriptorSet. */
function writeDependencySet(path: string): void {
  const files = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (files.has(file.name)) return;
    file.dependencies.forEach(visit);
    files.set(file.name, file);
  };
  visit(file_buf_validate_validate);
  const set = create(FileDescriptorSetSchema, { file: [...files.values()].map((f) => f.proto) });
  writeFileSync(path, toBinary(FileDescriptorSetSchema, set));
}

/**
 * Copies the grpc protos out of their npm packages under the paths Go and C++ servers register
 * them with (grpc-health-check keeps health.proto at health/v1/), so reflection clients see the
 * usual file names. Returns the proto paths.
 */
function copyGrpcProtos(dir: string): string[] {
  const require = createRequire(import.meta.url);
  const pkg = (name: string) => dirname(require.resolve(`${name}/package.json`));
  const sources: Record<string, string> = {
    "grpc/health/v1/health.proto": join(pkg("grpc-health-check"), "proto/health/v1/health.proto"),
    "grpc/reflection/v1/reflection.proto": join(
      pkg("@grpc/reflection"),
      "build/proto/grpc/reflection/v1/reflection.proto",
    ),
    "grpc/reflection/v1alpha/reflection.proto": join(
      pkg("@grpc/reflection"),
      "build/proto/grpc/reflection/v1alpha/reflection.proto",
    ),
    "google/rpc/error_details.proto": join(pkg("google-proto-files"), "google/rpc/error_details.proto"),
    "google/rpc/status.proto": join(pkg("google-proto-files"), "google/rpc/status.proto"),
  };
  rmSync(dir, { recursive: true, force: true });
  for (const [path, source] of Object.entries(sources)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    copyFileSync(source, join(dir, path));
  }
  return Object.keys(sources);
}

ensureCommand("protoc", "protobuf-compiler");
const build = join(root, "build");
mkdirSync(build, { recursive: true });
const deps = join(build, "deps.binpb");
const image = join(build, "image.binpb");
writeDependencySet(deps);
const grpcProtoDir = join(build, "grpc-proto");
const grpcProtos = copyGrpcProtos(grpcProtoDir);
const protos = listFiles(join(root, "proto")).filter((f) => f.endsWith(".proto"));
execFileSync(
  "protoc",
  [
    "-I",
    "proto",
    "-I",
    grpcProtoDir,
    `--descriptor_set_in=${deps}`,
    "--include_imports",
    "--include_source_info",
    `--descriptor_set_out=${image}`,
    ...protos,
    ...grpcProtos,
  ],
  { cwd: root, stdio: "inherit" },
);

const bin = join(root, "node_modules/.bin");
const buf = join(bin, "buf");
// buf finds the local protoc-gen-es plugin on PATH.
const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
execFileSync(buf, ["lint", image, "--path", "protomesh"], { cwd: root, stdio: "inherit", env });

const generate = ["generate", image, "--path", "protomesh", "--path", "grpc", "--path", "google/rpc"];

if (!check) {
  execFileSync(buf, generate, { cwd: root, stdio: "inherit", env });
} else {
  const out = mkdtempSync(join(tmpdir(), "protomesh-gen-"));
  try {
    execFileSync(buf, [...generate, "-o", out], {
      cwd: root,
      stdio: "inherit",
      env,
    });
    const fresh = join(out, genDir);
    const committed = join(root, genDir);
    const a = listFiles(fresh);
    const b = listFiles(committed);
    const stale = [...new Set([...a, ...b])].filter(
      (f) =>
        !a.includes(f) ||
        !b.includes(f) ||
        !readFileSync(join(fresh, f)).equals(readFileSync(join(committed, f))),
    );
    if (stale.length > 0) {
      console.error(`generated code is stale (run npm run generate): ${stale.join(", ")}`);
      process.exit(1);
    }
    console.log("contracts: buf lint ok, generated code is fresh");
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}
