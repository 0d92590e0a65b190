// The Node floor of a hop: a node:http2 proxy that passes every gRPC request to the user service
// as it came and its answer back, with no token check, limits, routing or metrics. What any Node
// HTTP/2 hop costs on this machine, so the gateway's CPU can be read against it as well as
// against nginx's. API=stream (the default) serves with the raw stream API; API=compat with
// Node's request/response compatibility objects, as the gateway does: the difference is what
// those objects cost.
// Child-process entry: USER_ADDR (required, host:port), PORT (default 0), API; prints
// {"port":N} once listening, stops on SIGTERM.
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import type { Readable } from "node:stream";
import { portFromEnv } from "./env.ts";

const userAddr = process.env.USER_ADDR;
if (!userAddr) {
  process.stderr.write("bare-proxy: USER_ADDR is required (e.g. 127.0.0.1:50051)\n");
  process.exit(1);
}
const port = portFromEnv("bare-proxy");
const api = process.env.API ?? "stream";
if (api !== "stream" && api !== "compat") {
  process.stderr.write(`bare-proxy: API must be stream or compat, got "${api}"\n`);
  process.exit(1);
}

let session: http2.ClientHttp2Session | undefined;
const { HTTP2_HEADER_STATUS, NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR } = http2.constants;

/** The client's side of one call: its headers and body in, the upstream's answer out. */
interface Downstream {
  headers: http2.IncomingHttpHeaders;
  body: Readable;
  gone(): boolean;
  respond(status: number, contentType: string | undefined): void;
  write(chunk: Buffer): void;
  end(trailers: http2.OutgoingHttpHeaders): void;
  reset(): void;
  onClose(fn: () => void): void;
}

function forward(down: Downstream): void {
  if (!session || session.closed || session.destroyed) {
    session = http2.connect(`http://${userAddr}`);
    session.on("error", () => {});
  }
  const { headers } = down;
  const out = session.request({
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
    if (!down.gone()) down.respond(Number(h[HTTP2_HEADER_STATUS]), h["content-type"]);
  });
  out.on("trailers", status);
  out.on("data", (chunk: Buffer) => {
    if (!down.gone()) down.write(chunk);
  });
  out.on("end", () => {
    if (!down.gone()) down.end(trailers);
  });
  out.on("error", () => {
    if (!down.gone()) down.reset();
  });
  // A client gone before the answer cancels the upstream call.
  down.onClose(() => {
    if (!out.readableEnded && !out.destroyed) out.close(NGHTTP2_CANCEL);
  });
  down.body.on("data", (chunk: Buffer) => out.write(chunk));
  down.body.on("end", () => out.end());
}

const server = http2.createServer();
if (api === "stream") {
  server.on("stream", (stream: http2.ServerHttp2Stream, headers) => {
    let trailers: http2.OutgoingHttpHeaders = {};
    stream.on("wantTrailers", () => stream.sendTrailers(trailers));
    stream.on("error", () => {}); // 'close' follows
    forward({
      headers,
      body: stream,
      gone: () => stream.destroyed || stream.closed,
      respond: (status, contentType) =>
        stream.respond(
          { [HTTP2_HEADER_STATUS]: status, "content-type": contentType },
          { waitForTrailers: true },
        ),
      write: (chunk) => stream.write(chunk),
      end: (t) => {
        trailers = t;
        stream.end();
      },
      reset: () => stream.close(NGHTTP2_INTERNAL_ERROR),
      onClose: (fn) => stream.on("close", fn),
    });
  });
} else {
  server.on("request", (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    res.on("error", () => {});
    forward({
      headers: req.headers,
      body: req,
      gone: () => res.destroyed || res.writableEnded,
      respond: (status, contentType) =>
        res.writeHead(status, contentType ? { "content-type": contentType } : {}),
      write: (chunk) => res.write(chunk),
      end: (t) => {
        res.addTrailers(t);
        res.end();
      },
      reset: () => res.stream.close(NGHTTP2_INTERNAL_ERROR),
      onClose: (fn) => res.on("close", fn),
    });
  });
}

process.on("SIGTERM", () => {
  session?.close();
  server.close();
  process.exit(0);
});
server.listen(port, "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);
});
