// The bare baseline of the chat and streams parts of the bench: a plain grpc-js server that holds every Subscribe stream
// and, on SIGUSR2, writes one pre-encoded message to each of them, with no gateway, no NATS and
// no database on the way. The message carries the time the writes began as its create_time, so
// the bench times it exactly as it times chat's messages from their commit.
// Child-process entry: PORT (default 0); prints {"port":N} once listening, stops on SIGTERM.
import { performance } from "node:perf_hooks";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ChatService, SubscribeResponseSchema } from "@protomesh/contracts/chat/v1/chat_pb";
import { portFromEnv } from "./env.ts";

const port = portFromEnv("bare-fanout");

const asIs = (b: Buffer) => b;
const subscribe: grpc.MethodDefinition<Buffer, Buffer> = {
  path: `/${ChatService.typeName}/${ChatService.method.subscribe.name}`,
  requestStream: false,
  responseStream: true,
  requestSerialize: asIs,
  requestDeserialize: asIs,
  responseSerialize: asIs,
  responseDeserialize: asIs,
};
// Every stream first gets what chat sends once it is live: a heartbeat.
const heartbeat = Buffer.from(
  toBinary(
    SubscribeResponseSchema,
    create(SubscribeResponseSchema, { event: { case: "heartbeat", value: {} } }),
  ),
);

const calls = new Set<grpc.ServerWritableStream<Buffer, Buffer>>();
const server = new grpc.Server();
server.addService(
  { subscribe },
  {
    subscribe(call: grpc.ServerWritableStream<Buffer, Buffer>) {
      calls.add(call);
      call.on("cancelled", () => calls.delete(call));
      call.write(heartbeat);
    },
  },
);

process.on("SIGUSR2", () => {
  const now = performance.timeOrigin + performance.now();
  const message = Buffer.from(
    toBinary(
      SubscribeResponseSchema,
      create(SubscribeResponseSchema, {
        seq: 1n,
        event: {
          case: "message",
          value: {
            text: "bench",
            createTime: { seconds: BigInt(Math.floor(now / 1000)), nanos: Math.round((now % 1000) * 1e6) },
          },
        },
      }),
    ),
  );
  for (const call of calls) call.write(message);
});
process.on("SIGTERM", () => {
  server.forceShutdown();
  process.exit(0);
});

server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
  if (err) {
    process.stderr.write(`bare-fanout: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify({ port: bound })}\n`);
});
