// The Node floor of a hop: a raw node:http2 proxy that passes every gRPC request to the user
// service as it came and its answer back, with no token check, limits, routing or metrics. What
// any Node HTTP/2 hop costs on this machine, so the gateway's CPU can be read against it as well
// as against nginx's.
// Child-process entry: USER_ADDR (required, host:port), PORT (default 0); prints {"port":N} once
// listening, stops on SIGTERM.
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";

const userAddr = process.env.USER_ADDR;
if (!userAddr) {
  process.stderr.write("bare-proxy: USER_ADDR is required (e.g. 127.0.0.1:50051)\n");
  process.exit(1);
}
const port = Number(process.env.PORT ?? "0");
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`bare-proxy: PORT must be an integer 0-65535, got "${process.env.PORT}"\n`);
  process.exit(1);
}

let session: http2.ClientHttp2Session | undefined;
const upstream = () => {
  if (!session || session.closed || session.destroyed) {
    session = http2.connect(`http://${userAddr}`);
    session.on("error", () => {});
  }
  return session;
};

// Hop-by-hop and pseudo headers are the proxy's own; everything else passes as it is.
const { HTTP2_HEADER_STATUS } = http2.constants;
const server = http2.createServer();
server.on("stream", (stream: http2.ServerHttp2Stream, headers) => {
  const out = upstream().request({
    ":method": "POST",
    ":path": headers[":path"],
    "content-type": headers["content-type"],
    te: "trailers",
    ...(headers.authorization ? { authorization: headers.authorization } : {}),
  });
  let trailers: http2.OutgoingHttpHeaders = {};
  const status = (h: http2.IncomingHttpHeaders) => {
    if (h["grpc-status"] !== undefined)
      trailers = { "grpc-status": h["grpc-status"], "grpc-message": h["grpc-message"] ?? "" };
  };
  out.on("response", (h) => {
    status(h); // trailers-only answers carry the status in the headers
    // The client may have left meanwhile (a load generator stops mid-flight).
    if (stream.destroyed || stream.closed) return;
    stream.respond(
      { [HTTP2_HEADER_STATUS]: h[HTTP2_HEADER_STATUS], "content-type": h["content-type"] },
      {
        waitForTrailers: true,
      },
    );
  });
  out.on("trailers", status);
  stream.on("wantTrailers", () => stream.sendTrailers(trailers));
  out.on("data", (chunk: Buffer) => {
    if (!stream.destroyed) stream.write(chunk);
  });
  out.on("end", () => {
    if (!stream.destroyed) stream.end();
  });
  out.on("error", () => {
    if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  });
  // A client gone before the answer cancels the upstream call ('close' follows any 'error').
  stream.on("close", () => {
    if (!out.readableEnded && !out.destroyed) out.close(http2.constants.NGHTTP2_CANCEL);
  });
  stream.on("error", () => {});
  stream.on("data", (chunk: Buffer) => out.write(chunk));
  stream.on("end", () => out.end());
});

process.on("SIGTERM", () => {
  session?.close();
  server.close();
  process.exit(0);
});
server.listen(port, "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);
});
