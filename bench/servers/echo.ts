// Bare grpc-js server answering UserService.GetMe with precomputed bytes: the ceiling every other
// path in the bench is compared against, so it uses no protomesh platform code at all.
// Child-process entry: PORT (default 0), prints {"port":N} once listening, stops on SIGTERM.
import { Server, ServerCredentials, type ServiceDefinition, type sendUnaryData } from "@grpc/grpc-js";
import {
  deserializeGetMeRequest,
  GET_ME_PATH,
  sampleGetMeResponse,
  serializeGetMeRequest,
  serializeGetMeResponse,
} from "../lib/getme.ts";

// Encoded once: the server then pays only for HTTP/2 framing, never for protobuf encoding.
const RESPONSE_BYTES = serializeGetMeResponse(sampleGetMeResponse());

// Hand-made definition for the one method, so no proto-loader or platform adapter sits in the path.
const definition: ServiceDefinition = {
  getMe: {
    path: GET_ME_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: serializeGetMeRequest,
    requestDeserialize: deserializeGetMeRequest,
    responseSerialize: (bytes: Buffer) => bytes,
    responseDeserialize: (bytes: Buffer) => bytes,
  },
};

const port = Number(process.env.PORT ?? "0");
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`echo: PORT must be an integer 0-65535, got "${process.env.PORT}"\n`);
  process.exit(1);
}

const server = new Server();
server.addService(definition, {
  getMe: (_call: unknown, callback: sendUnaryData<Buffer>) => callback(null, RESPONSE_BYTES),
});

server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (err, bound) => {
  if (err) {
    process.stderr.write(`echo: bind failed: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify({ port: bound })}\n`);
});

function stop(): void {
  // Graceful first so in-flight calls finish; forced if a client keeps a stream open.
  const force = setTimeout(() => server.forceShutdown(), 2_000);
  force.unref();
  server.tryShutdown(() => {
    clearTimeout(force);
    process.exit(0);
  });
}
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
