// `npm run grpc -- [flags] <host:port> list|describe|<Service/Method>`: grpcurl's everyday
// commands for operators without grpcurl (Debian does not package it). Like grpcurl it knows
// nothing but the address: every descriptor comes from the server's reflection, and JSON is
// converted with protobuf-es against the reflected registry.
import { readFileSync } from "node:fs";
import {
  type DescEnum,
  type DescExtension,
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescService,
  type FileRegistry,
  fromBinary,
  fromJson,
  type JsonValue,
  toBinary,
  toJsonString,
} from "@bufbuild/protobuf";
import { FieldDescriptorProto_Type } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { createReflectionClient, type ReflectionClient, ReflectionError } from "@protomesh/devkit";

const usage = `usage: npm run grpc -- [flags] <host:port> <command>

commands:
  list [service]              services the server lists, or the methods of one
  describe [symbol]           a service, method, message or enum (all services if omitted)
  <package.Service/Method>    call a unary or server-streaming method; prints one JSON
                              message per line

flags:
  -H 'name: value'            request metadata (repeatable); sent with reflection too
  -d '<json>'                 request body as JSON ('@' reads it from stdin); default {}
  -max-time <seconds>         deadline for the call
  -plaintext                  accepted for grpcurl compatibility (always plaintext)
  -reflect-v1alpha            ask reflection v1alpha instead of v1`;

/** grpc-go's names for status codes, which grpcurl prints. */
const codeNames = [
  "OK",
  "Canceled",
  "Unknown",
  "InvalidArgument",
  "DeadlineExceeded",
  "NotFound",
  "AlreadyExists",
  "PermissionDenied",
  "ResourceExhausted",
  "FailedPrecondition",
  "Aborted",
  "OutOfRange",
  "Unimplemented",
  "Internal",
  "Unavailable",
  "DataLoss",
  "Unauthenticated",
];

class UsageError extends Error {}

type Args = {
  address: string;
  command: string[];
  metadata: grpc.Metadata;
  data: string | undefined;
  maxTimeSeconds: number | undefined;
  v1alpha: boolean;
};

function parseArgs(argv: string[]): Args {
  const metadata = new grpc.Metadata();
  let data: string | undefined;
  let maxTimeSeconds: number | undefined;
  let v1alpha = false;
  let i = 0;
  const value = (flag: string) => {
    const v = argv[++i];
    if (v === undefined) throw new UsageError(`${flag} needs a value`);
    return v;
  };
  // Flags come before the address, as with grpcurl; one or two dashes both work.
  for (; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    if (!arg.startsWith("-")) break;
    switch (arg.replace(/^--?/, "")) {
      case "H": {
        const header = value(arg);
        const colon = header.indexOf(":");
        if (colon <= 0) throw new UsageError(`-H wants 'name: value', got '${header}'`);
        metadata.add(header.slice(0, colon).trim().toLowerCase(), header.slice(colon + 1).trim());
        break;
      }
      case "d":
        data = value(arg);
        break;
      case "max-time":
        maxTimeSeconds = Number(value(arg));
        if (!(maxTimeSeconds > 0)) throw new UsageError("-max-time wants a positive number of seconds");
        break;
      case "plaintext":
        break;
      case "reflect-v1alpha":
        v1alpha = true;
        break;
      case "h":
      case "help":
        throw new UsageError("");
      default:
        throw new UsageError(`unknown flag ${arg}`);
    }
  }
  const [address, ...command] = argv.slice(i);
  if (!address || command.length === 0) throw new UsageError("need an address and a command");
  return { address, command, metadata, data, maxTimeSeconds, v1alpha };
}

function scalarName(type: FieldDescriptorProto_Type): string {
  return (FieldDescriptorProto_Type[type] ?? String(type)).toLowerCase();
}

function fieldType(field: DescField | DescExtension): string {
  if (field.fieldKind === "map") {
    const entry = field.message ?? field.enum;
    const valueType = entry ? `.${entry.typeName}` : scalarName(field.scalar as number);
    return `map<${scalarName(field.mapKey as number)}, ${valueType}>`;
  }
  const label = field.fieldKind === "list" ? "repeated " : field.proto.proto3Optional ? "optional " : "";
  return label + (field.proto.typeName || scalarName(field.proto.type));
}

function printMethod(method: DescMethod, indent = ""): string {
  const input = method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming";
  const output = method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming";
  return (
    `${indent}rpc ${method.name} ( ${input ? "stream " : ""}.${method.input.typeName} ) ` +
    `returns ( ${output ? "stream " : ""}.${method.output.typeName} );`
  );
}

function printEnum(e: DescEnum, indent = ""): string {
  const values = e.values.map((v) => `${indent}  ${v.name} = ${v.number};`);
  return [`${indent}enum ${e.name} {`, ...values, `${indent}}`].join("\n");
}

function printMessage(message: DescMessage, indent = ""): string {
  const field = (f: DescField, pad: string) => `${pad}${fieldType(f)} ${f.name} = ${f.number};`;
  const lines = [`${indent}message ${message.name} {`];
  for (const member of message.members) {
    if (member.kind === "field") {
      lines.push(field(member, `${indent}  `));
    } else {
      lines.push(`${indent}  oneof ${member.name} {`);
      for (const f of member.fields) lines.push(field(f, `${indent}    `));
      lines.push(`${indent}  }`);
    }
  }
  for (const nested of message.nestedMessages) {
    if (!nested.proto.options?.mapEntry) lines.push(printMessage(nested, `${indent}  `));
  }
  for (const nested of message.nestedEnums) lines.push(printEnum(nested, `${indent}  `));
  lines.push(`${indent}}`);
  return lines.join("\n");
}

function printService(service: DescService): string {
  return [`service ${service.name} {`, ...service.methods.map((m) => printMethod(m, "  ")), "}"].join("\n");
}

/** Finds a service, method, message or enum by its fully-qualified name, as grpcurl describes them. */
function describeSymbol(registry: FileRegistry, symbol: string): string {
  const desc = registry.get(symbol);
  switch (desc?.kind) {
    case "service":
      return `${symbol} is a service:\n${printService(desc)}`;
    case "message":
      return `${symbol} is a message:\n${printMessage(desc)}`;
    case "enum":
      return `${symbol} is an enum:\n${printEnum(desc)}`;
    case "extension":
      return `${symbol} is an extension of .${desc.extendee.typeName}:\n${fieldType(desc)} ${desc.name} = ${desc.number};`;
  }
  const dot = symbol.lastIndexOf(".");
  const parent = registry.get(symbol.slice(0, dot));
  const name = symbol.slice(dot + 1);
  if (parent?.kind === "service") {
    const method = parent.methods.find((m) => m.name === name);
    if (method) return `${symbol} is a method:\n${printMethod(method)}`;
  }
  if (parent?.kind === "message") {
    const field = parent.fields.find((f) => f.name === name);
    if (field) return `${symbol} is a field:\n${fieldType(field)} ${field.name} = ${field.number};`;
  }
  throw new Error(`symbol not found: ${symbol}`);
}

/** Splits "pkg.Service/Method" (or grpcurl's other spelling, "pkg.Service.Method"). */
function splitMethod(name: string): [string, string] {
  const at = name.includes("/") ? name.lastIndexOf("/") : name.lastIndexOf(".");
  if (at <= 0) throw new UsageError(`not a method name: ${name}`);
  return [name.slice(0, at), name.slice(at + 1)];
}

function requestJson(data: string | undefined): JsonValue {
  const text = data === "@" ? readFileSync(0, "utf8") : (data ?? "{}");
  try {
    return JSON.parse(text.trim() === "" ? "{}" : text) as JsonValue;
  } catch (e) {
    throw new Error(`request is not JSON: ${(e as Error).message}`);
  }
}

async function invoke(args: Args, reflection: ReflectionClient, name: string): Promise<void> {
  const [serviceName, methodName] = splitMethod(name);
  const registry = await reflection.describe(serviceName);
  const service = registry.getService(serviceName);
  if (!service) throw new Error(`${serviceName} is not a service`);
  const method = service.methods.find((m) => m.name === methodName);
  if (!method) throw new Error(`service ${serviceName} has no method ${methodName}`);
  const request = fromJson(method.input, requestJson(args.data), { registry });
  const path = `/${service.typeName}/${method.name}`;
  const serialize = (m: typeof request) => Buffer.from(toBinary(method.input, m));
  const deserialize = (b: Buffer) => fromBinary(method.output, b);
  const print = (m: ReturnType<typeof deserialize>) =>
    process.stdout.write(`${toJsonString(method.output, m, { registry })}\n`);
  const options: grpc.CallOptions =
    args.maxTimeSeconds === undefined ? {} : { deadline: Date.now() + args.maxTimeSeconds * 1000 };
  const client = new grpc.Client(args.address, grpc.credentials.createInsecure());
  try {
    switch (method.methodKind) {
      case "unary":
        print(
          await new Promise((resolve, reject) =>
            client.makeUnaryRequest(
              path,
              serialize,
              deserialize,
              request,
              args.metadata,
              options,
              (err, res) => (err || !res ? reject(err) : resolve(res)),
            ),
          ),
        );
        return;
      case "server_streaming":
        await new Promise<void>((resolve, reject) => {
          const call = client.makeServerStreamRequest(
            path,
            serialize,
            deserialize,
            request,
            args.metadata,
            options,
          );
          call.on("data", print);
          call.on("error", reject);
          call.on("status", (s: grpc.StatusObject) => s.code === grpc.status.OK && resolve());
        });
        return;
      default:
        throw new Error(`${method.methodKind.replace("_", "-")} methods are not supported here; use grpcurl`);
    }
  } finally {
    client.close();
  }
}

async function run(args: Args): Promise<void> {
  const reflection = createReflectionClient(args.address, {
    version: args.v1alpha ? "v1alpha" : "v1",
    metadata: args.metadata,
  });
  try {
    const [command, symbol, ...rest] = args.command;
    if (rest.length > 0) throw new UsageError(`unexpected arguments: ${rest.join(" ")}`);
    if (command === "list") {
      if (symbol === undefined) {
        for (const name of await reflection.listServices()) console.log(name);
        return;
      }
      const service = (await reflection.describe(symbol)).getService(symbol);
      if (!service) throw new Error(`${symbol} is not a service`);
      for (const m of service.methods) console.log(`${service.typeName}.${m.name}`);
    } else if (command === "describe") {
      const symbols = symbol === undefined ? await reflection.listServices() : [symbol];
      for (const s of symbols) console.log(describeSymbol(await reflection.describe(s), s));
    } else if (command !== undefined && symbol === undefined) {
      await invoke(args, reflection, command);
    } else {
      throw new UsageError(`unexpected arguments: ${args.command.join(" ")}`);
    }
  } finally {
    reflection.close();
  }
}

function isStatusError(e: unknown): e is { code: grpc.status; details?: string; message: string } {
  return typeof e === "object" && e !== null && typeof (e as { code?: unknown }).code === "number";
}

try {
  await run(parseArgs(process.argv.slice(2)));
} catch (e) {
  if (e instanceof UsageError) {
    if (e.message) console.error(`${e.message}\n`);
    console.error(usage);
    process.exitCode = 2;
  } else if (isStatusError(e)) {
    // grpcurl's format and exit status (64 + code), so scripts written for it keep working.
    const message = e instanceof ReflectionError ? e.message : (e.details ?? e.message);
    console.error(`ERROR:\n  Code: ${codeNames[e.code] ?? e.code}\n  Message: ${message}`);
    process.exitCode = 64 + e.code;
  } else {
    console.error(`Error: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  }
}
