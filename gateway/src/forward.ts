// The gateway's hot path: calls forwarded to the upstream service as bytes, without decoding the
// messages. gRPC, gRPC-web and Connect streaming (binary) carry the same length-prefixed frames
// as gRPC, and a Connect binary unary body is the bare message: only headers, the 5-byte prefix
// and the final status are translated. Connect JSON (unary, streaming and GET) is transcoded
// here, with the method's descriptors. What is left to Connect (app.ts) is rare: gRPC over
// HTTP/1.1, a GET with a binary message not in base64, and requests no route or codec fits.
import { constants as h2, type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http2";
import { promisify } from "node:util";
import { gunzip as gunzipCb, gzip as gzipCb } from "node:zlib";
import { type DescMethod, fromBinary, fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  codeToHttpStatus,
  endStreamFlag,
  endStreamToJson,
  errorToJson,
} from "@connectrpc/connect/protocol-connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { GATEWAY_TOKEN_HEADER, type Logger, REQUEST_ID_HEADER, USER_AGENT_HEADER } from "@protomesh/platform";
import type { Request, Response } from "./http.ts";
import type { Admission, Exchange, Observer, StreamSlots, Timeouts } from "./routes.ts";
import type { Upstream } from "./upstream.ts";

const gunzip = promisify(gunzipCb);
const gzip = promisify(gzipCb);

/** One exposed method as the forwarder routes it. */
export interface Route {
  method: DescMethod;
  /** `pkg.Service/Method`, as metrics and logs name it. */
  procedure: string;
  upstream: Upstream;
  streaming: boolean;
}

/** The protocols forwarded as bytes, by what the client sent. */
type Wire =
  | "grpc"
  | "grpc-web"
  | "grpc-web-text"
  | "connect"
  | "connect-json"
  | "connect-stream"
  | "connect-stream-json";

const WIRES: Record<string, Wire> = {
  "application/grpc": "grpc",
  "application/grpc+proto": "grpc",
  "application/grpc-web": "grpc-web",
  "application/grpc-web+proto": "grpc-web",
  "application/grpc-web-text": "grpc-web-text",
  "application/grpc-web-text+proto": "grpc-web-text",
  "application/proto": "connect",
  "application/json": "connect-json",
  "application/connect+proto": "connect-stream",
  "application/connect+json": "connect-stream-json",
};

// Connect compresses unary answers from this size on (as connect-node does).
const GZIP_FROM_BYTES = 1024;
// A unary answer is collected before it is sent (Connect binary strips its prefix): like
// grpc-js's default receive limit, which the gateway had before it forwarded bytes.
const MAX_COLLECTED_BYTES = 4 * 1024 * 1024;
const TRAILER_FLAG = 0x80;

const GATEWAY_STOPPING = () => new ConnectError("the gateway is shutting down; reconnect", Code.Unavailable);

/** What the forwarder needs from the gateway. */
export interface ForwarderOptions {
  routes: ReadonlyMap<string, Route>;
  admit: Admission;
  observe: Observer;
  timeouts: Timeouts;
  credentials: { token(): Promise<string> };
  maxRequestBytes: number;
  /** A stream whose client reads slower than its upstream writes is ended past this many bytes. */
  maxStreamBufferBytes: number;
  slots: StreamSlots;
  log: Logger;
}

/** A call under way, so that a stop can end it. */
interface Call {
  streaming: boolean;
  abort(err: ConnectError): void;
}

const frame = (flags: number, payload: Uint8Array) => {
  const out = Buffer.allocUnsafe(5 + payload.length);
  out[0] = flags;
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, 5);
  return out;
};

const header = (headers: IncomingHttpHeaders, name: string) => {
  const v = headers[name];
  return typeof v === "string" ? v : undefined;
};

/**
 * Reads a request body of at most `limit` bytes; RESOURCE_EXHAUSTED past it, once the rest has
 * been read and dropped (answering an HTTP/2 stream still sending would reset it under the
 * answer; the body timeout bounds how long that takes).
 */
function readBody(req: Request, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
    });
    req.once("end", () => {
      if (size > limit)
        reject(new ConnectError(`request larger than ${limit} bytes`, Code.ResourceExhausted));
      else resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
    });
    req.once("error", reject);
  });
}

/** Gunzips at most `limit` bytes; RESOURCE_EXHAUSTED past it, INVALID_ARGUMENT if not gzip. */
async function inflate(data: Uint8Array, limit: number): Promise<Buffer> {
  try {
    return await gunzip(data, { maxOutputLength: limit });
  } catch (err) {
    if ((err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
      throw new ConnectError(`message larger than ${limit} bytes`, Code.ResourceExhausted);
    }
    throw new ConnectError("message is not valid gzip", Code.InvalidArgument);
  }
}

/**
 * The request's frames as the upstream takes them: uncompressed (gzip frames are inflated),
 * each message at most `limit` bytes. Most requests pass unchanged.
 */
async function identityFrames(body: Buffer, encoding: string | undefined, limit: number): Promise<Buffer> {
  let compressed = false;
  for (let at = 0; at < body.length; ) {
    if (body.length - at < 5) throw new ConnectError("incomplete frame", Code.InvalidArgument);
    const flags = body[at] ?? 0;
    const length = body.readUInt32BE(at + 1);
    if (length > limit) throw new ConnectError(`message larger than ${limit} bytes`, Code.ResourceExhausted);
    if (at + 5 + length > body.length) throw new ConnectError("incomplete frame", Code.InvalidArgument);
    if (flags === 1) compressed = true;
    else if (flags !== 0) throw new ConnectError(`unexpected frame flags ${flags}`, Code.InvalidArgument);
    at += 5 + length;
  }
  if (!compressed) return body;
  if (encoding !== "gzip") {
    throw new ConnectError(
      `compressed frame with encoding "${encoding ?? "identity"}"`,
      Code.InvalidArgument,
    );
  }
  const frames: Buffer[] = [];
  for (let at = 0; at < body.length; ) {
    const length = body.readUInt32BE(at + 1);
    const payload = body.subarray(at + 5, at + 5 + length);
    frames.push(frame(0, body[at] === 1 ? await inflate(payload, limit) : payload));
    at += 5 + length;
  }
  return Buffer.concat(frames);
}

/** The deadline the client asked for, in ms (grpc-timeout or connect-timeout-ms), if any. */
function askedTimeoutMs(wire: Wire, headers: IncomingHttpHeaders): number | undefined {
  if (wire !== "grpc" && wire !== "grpc-web" && wire !== "grpc-web-text") {
    const v = header(headers, "connect-timeout-ms");
    return v && /^\d{1,10}$/.test(v) ? Number(v) : undefined;
  }
  const m = /^(\d{1,8})([HMSmun])$/.exec(header(headers, "grpc-timeout") ?? "");
  if (!m) return undefined;
  const unitMs = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 1e-3, n: 1e-6 }[m[2] as "H"];
  return Math.ceil(Number(m[1]) * unitMs);
}

/** grpc-timeout holds at most 8 digits: milliseconds, or whole seconds for long streams. */
const grpcTimeout = (ms: number) => (ms < 1e8 ? `${ms}m` : `${Math.ceil(ms / 1000)}S`);

/** A status the upstream answered with: its grpc-* fields, as received. */
type Trailers = Record<string, string>;

const GRPC_FIELDS = ["grpc-status", "grpc-message", "grpc-status-details-bin"];
function grpcFields(from: IncomingHttpHeaders): Trailers | undefined {
  if (from["grpc-status"] === undefined) return undefined;
  const out: Trailers = {};
  for (const name of GRPC_FIELDS) {
    const v = from[name];
    if (typeof v === "string") out[name] = v;
  }
  return out;
}

/**
 * grpc-message as the gRPC spec encodes it: printable ASCII as is, other bytes and `%` escaped.
 * (encodeURIComponent also escapes `;`, `:` and the like, which grpc-js does not decode.)
 */
const grpcMessage = (message: string) =>
  Array.from(Buffer.from(message), (b) =>
    b >= 0x20 && b <= 0x7e && b !== 0x25
      ? String.fromCharCode(b)
      : `%${b.toString(16).toUpperCase().padStart(2, "0")}`,
  ).join("");

/** The grpc-* fields of an error made here. */
function trailersOf(err: ConnectError): Trailers {
  const out: Trailers = {};
  setTrailerStatus(new Headers(), err).forEach((value, name) => {
    if (GRPC_FIELDS.includes(name)) out[name] = value;
  });
  if (out["grpc-message"] !== undefined) out["grpc-message"] = grpcMessage(err.rawMessage);
  return out;
}

const errorOf = (t: Trailers) => findTrailerError(new Headers(t));

/** gRPC's mapping of an upstream's HTTP status that is not 200 (the upstream is no gRPC server). */
function httpError(status: number): ConnectError {
  const code =
    status === 400
      ? Code.Internal
      : status === 401
        ? Code.Unauthenticated
        : status === 403
          ? Code.PermissionDenied
          : status === 404
            ? Code.Unimplemented
            : [429, 502, 503, 504].includes(status)
              ? Code.Unavailable
              : Code.Unknown;
  return new ConnectError(`upstream answered HTTP ${status}`, code);
}

/** How a response is written for one protocol: headers, each chunk of frames, the end. */
interface Sink {
  start(): void;
  data(chunk: Buffer): void;
  /** Ends the response with the upstream's status fields (the call succeeded when absent). */
  end(trailers: Trailers): void;
}

/** gRPC-web trailers: a last frame flagged 0x80 holding them as HTTP/1 header lines. */
const trailerFrame = (t: Trailers) =>
  frame(
    TRAILER_FLAG,
    Buffer.from(
      Object.entries(t)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join(""),
    ),
  );

/** Base64 that stays one valid string however the bytes are split: 3-byte groups, rest kept. */
function base64Writer(write: (s: string) => void) {
  let rest: Buffer = Buffer.alloc(0);
  return {
    write(chunk: Buffer) {
      const all = rest.length > 0 ? Buffer.concat([rest, chunk]) : chunk;
      const whole = all.length - (all.length % 3);
      rest = all.subarray(whole);
      if (whole > 0) write(all.subarray(0, whole).toString("base64"));
    },
    flush() {
      if (rest.length > 0) write(rest.toString("base64"));
      rest = Buffer.alloc(0);
    },
  };
}

// Invalid UTF-8 is the caller's mistake to hear about, not text to store with U+FFFD in it.
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A Connect JSON request as the upstream takes it; a misspelt field is refused, not ignored. */
function jsonToBinary(method: DescMethod, json: Buffer): Uint8Array {
  try {
    const message = fromJsonString(method.input, utf8.decode(json), { ignoreUnknownFields: false });
    return toBinary(method.input, message);
  } catch (err) {
    throw new ConnectError(
      `cannot decode message ${method.input.typeName} from JSON: ${(err as Error).message}`,
      Code.InvalidArgument,
    );
  }
}

/** Each frame's message re-encoded by `convert` (the frames are whole and uncompressed). */
function reframe(frames: Buffer, convert: (message: Buffer) => Uint8Array): Buffer {
  const out: Buffer[] = [];
  for (let at = 0; at < frames.length; ) {
    const length = frames.readUInt32BE(at + 1);
    out.push(frame(0, convert(frames.subarray(at + 5, at + 5 + length))));
    at += 5 + length;
  }
  return Buffer.concat(out);
}

/** Turns an upstream's binary frames into Connect JSON frames, however its bytes are split. */
function jsonFrames(method: DescMethod) {
  let rest: Buffer = Buffer.alloc(0);
  return (chunk: Buffer): Buffer => {
    const all = rest.length > 0 ? Buffer.concat([rest, chunk]) : chunk;
    const out: Buffer[] = [];
    let at = 0;
    while (all.length - at >= 5 && all.length - at - 5 >= all.readUInt32BE(at + 1)) {
      const end = at + 5 + all.readUInt32BE(at + 1);
      // The gateway asks upstreams for identity: a compressed frame is a broken upstream.
      if (all[at] !== 0) throw new ConnectError("upstream sent an unexpected frame", Code.Internal);
      const message = fromBinary(method.output, all.subarray(at + 5, end));
      out.push(frame(0, Buffer.from(toJsonString(method.output, message))));
      at = end;
    }
    rest = all.subarray(at);
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  };
}

/** A Connect GET's query, read once: each parameter as sent (percent-encoded). */
interface GetQuery {
  encoding?: string;
  message?: string;
  base64?: string;
  compression?: string;
}

function getQuery(req: Request): GetQuery {
  const url = req.url ?? "";
  const q: Record<string, string> = {};
  for (const pair of url.slice(url.indexOf("?") + 1).split("&")) {
    const eq = pair.indexOf("=");
    if (eq > 0) q[pair.slice(0, eq)] ??= pair.slice(eq + 1);
  }
  return q;
}

/** A query parameter strictly decoded: invalid UTF-8 is refused, not replaced with U+FFFD. */
function decodeParam(name: string, value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, " "));
  } catch {
    throw new ConnectError(
      `query parameter ${name} is not valid percent-encoded UTF-8`,
      Code.InvalidArgument,
    );
  }
}

/** Creates the forwarder; `serve` returns false for requests it does not forward (left to Connect). */
export function createForwarder(opts: ForwarderOptions) {
  const active = new Set<Call>();
  const { timeouts, maxRequestBytes: limit } = opts;

  const passThrough = (
    wire: "grpc" | "grpc-web" | "grpc-web-text" | "connect-stream" | "connect-stream-json",
    req: Request,
    res: Response,
    write: (chunk: Buffer | string) => void,
    fail: (err: ConnectError) => void,
    method: DescMethod,
  ): Sink => {
    const connectStream = wire === "connect-stream" || wire === "connect-stream-json";
    const toJson = wire === "connect-stream-json" ? jsonFrames(method) : undefined;
    const type = header(req.headers, "content-type") ?? "";
    let started = false;
    const start = () => {
      if (started || res.headersSent) return;
      started = true;
      res.writeHead(200, {
        "content-type": type,
        ...(wire === "grpc" ? { "grpc-accept-encoding": "identity, gzip" } : {}),
        ...(connectStream ? { "connect-accept-encoding": "gzip" } : {}),
      });
    };
    const text = wire === "grpc-web-text" ? base64Writer(write) : undefined;
    return {
      start,
      data(chunk) {
        start();
        if (text) text.write(chunk);
        else if (!toJson) write(chunk);
        else {
          try {
            const json = toJson(chunk);
            if (json.length > 0) write(json);
          } catch (err) {
            fail(
              err instanceof ConnectError
                ? err
                : new ConnectError("upstream sent an undecodable message", Code.Internal),
            );
          }
        }
      },
      end(t) {
        start();
        if (wire === "grpc") {
          (res as unknown as { addTrailers(t: Trailers): void }).addTrailers(
            t["grpc-status"] ? t : { "grpc-status": "0" },
          );
          res.end();
          return;
        }
        if (connectStream) {
          const err = t["grpc-status"] && t["grpc-status"] !== "0" ? errorOf(t) : undefined;
          const json = endStreamToJson(new Headers(), err, undefined);
          res.end(frame(endStreamFlag, Buffer.from(JSON.stringify(json))));
          return;
        }
        const last = trailerFrame(t["grpc-status"] ? t : { "grpc-status": "0" });
        if (text) {
          text.write(last);
          text.flush();
          res.end();
        } else res.end(last);
      },
    };
  };

  /**
   * Connect unary: the answer's one frame without its prefix (as JSON for a JSON request), or
   * the error as JSON.
   */
  const unary = (req: Request, res: Response, fail: (err: ConnectError) => void, json?: DescMethod): Sink => {
    const chunks: Buffer[] = [];
    let size = 0;
    return {
      start() {},
      data(chunk) {
        size += chunk.length;
        if (size > MAX_COLLECTED_BYTES) {
          fail(new ConnectError("answer too large", Code.ResourceExhausted));
          return;
        }
        chunks.push(chunk);
      },
      end(t) {
        if (t["grpc-status"] && t["grpc-status"] !== "0") return connectError(res, errorOf(t));
        const body = Buffer.concat(chunks);
        const length = body.length >= 5 ? body.readUInt32BE(1) : -1;
        if (length !== body.length - 5 || body[0] !== 0) {
          return connectError(
            res,
            new ConnectError("upstream answered other than one message", Code.Internal),
          );
        }
        const type = json ? "application/json" : "application/proto";
        let message = body.subarray(5);
        if (json) {
          try {
            message = Buffer.from(toJsonString(json.output, fromBinary(json.output, message)));
          } catch {
            return connectError(
              res,
              new ConnectError("upstream answered an undecodable message", Code.Internal),
            );
          }
        }
        const offered = /\bgzip\b/.test(header(req.headers, "accept-encoding") ?? "");
        if (!offered || message.length < GZIP_FROM_BYTES) {
          res.writeHead(200, { "content-type": type }).end(message);
          return;
        }
        void gzip(message).then(
          (zipped) => res.writeHead(200, { "content-type": type, "content-encoding": "gzip" }).end(zipped),
          () => res.destroy(),
        );
      },
    };
  };

  const connectError = (res: Response, err: ConnectError | undefined) => {
    const e = err ?? new ConnectError("unknown error", Code.Unknown);
    res
      .writeHead(codeToHttpStatus(e.code), { "content-type": "application/json" })
      .end(JSON.stringify(errorToJson(e, undefined)));
  };

  /** The request's frames for the upstream, from the body as the client sent it. */
  const framesOf = async (wire: Wire, req: Request, method: DescMethod, get?: GetQuery): Promise<Buffer> => {
    const h = req.headers;
    if (get) {
      // serveGet took only base64 or JSON messages, identity or gzip.
      const text = decodeParam("message", get.message ?? "");
      const bytes = get.base64 === "1" ? Buffer.from(text, "base64url") : Buffer.from(text);
      if (bytes.length > limit) {
        throw new ConnectError(`message larger than ${limit} bytes`, Code.ResourceExhausted);
      }
      const message = get.compression === "gzip" ? await inflate(bytes, limit) : bytes;
      return frame(0, wire === "connect" ? message : jsonToBinary(method, message));
    }
    if (wire === "connect" || wire === "connect-json") {
      const encoding = header(h, "content-encoding");
      if (encoding && encoding !== "identity" && encoding !== "gzip") {
        throw new ConnectError(`unsupported content-encoding "${encoding}"`, Code.Unimplemented);
      }
      const body = await readBody(req, limit);
      const message = encoding === "gzip" ? await inflate(body, limit) : body;
      return frame(0, wire === "connect" ? message : jsonToBinary(method, message));
    }
    const connectStream = wire === "connect-stream" || wire === "connect-stream-json";
    const encoding = header(h, connectStream ? "connect-content-encoding" : "grpc-encoding");
    if (encoding && encoding !== "identity" && encoding !== "gzip") {
      throw new ConnectError(`unsupported encoding "${encoding}"`, Code.Unimplemented);
    }
    if (wire === "grpc-web-text") {
      const text = await readBody(req, Math.ceil((limit + 5) / 3) * 4 + 4);
      return identityFrames(Buffer.from(text.toString("latin1"), "base64"), encoding, limit);
    }
    const frames = await identityFrames(await readBody(req, limit + 5), encoding, limit);
    return wire === "connect-stream-json" ? reframe(frames, (m) => jsonToBinary(method, m)) : frames;
  };

  const upstreamHeaders = async (route: Route, req: Request, exchange: Exchange, timeoutMs: number) => {
    const h = req.headers;
    const out: OutgoingHttpHeaders = {
      ":method": "POST",
      ":path": `/${route.procedure}`,
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-accept-encoding": "identity",
      "grpc-timeout": grpcTimeout(timeoutMs),
      "x-forwarded-for": exchange.clientIp,
      [GATEWAY_TOKEN_HEADER]: await opts.credentials.token(),
    };
    for (const name of ["authorization", REQUEST_ID_HEADER]) {
      const v = header(h, name);
      if (v) out[name] = v;
    }
    const agent = header(h, "user-agent");
    if (agent) out[USER_AGENT_HEADER] = agent.slice(0, 512);
    return out;
  };

  const call = async (
    route: Route,
    wire: Wire,
    req: Request,
    res: Response,
    exchange: Exchange,
    get?: GetQuery,
  ) => {
    const done = opts.observe(route.procedure, header(req.headers, REQUEST_ID_HEADER));
    let finished = false;
    let upstream: ReturnType<Upstream["request"]> | undefined;
    let timer: NodeJS.Timeout | undefined;
    let release: (() => void) | undefined;
    // Bytes handed to the client's connection and not yet flushed to it.
    let pending = 0;
    const write = (chunk: Buffer | string) => {
      // The client may be gone: its 'close' cancels the upstream, whose last chunks still come.
      if (res.destroyed || res.writableEnded) return;
      const n = chunk.length;
      pending += n;
      const more = res.write(chunk, () => {
        pending -= n;
      });
      if (!route.streaming) {
        // A unary answer is bounded: the upstream waits while the client catches up.
        if (!more && upstream && !upstream.isPaused()) {
          upstream.pause();
          res.once("drain", () => upstream?.resume());
        }
      } else if (pending > opts.maxStreamBufferBytes) {
        fail(new ConnectError("the client reads too slowly; stream ended", Code.ResourceExhausted));
      }
    };
    /** Records the call's end, once; false if it had already ended. */
    const settle = (code: number) => {
      if (finished) return false;
      finished = true;
      clearTimeout(timer);
      release?.();
      active.delete(entry);
      done(code);
      return true;
    };
    const cancelUpstream = () => {
      if (upstream && !upstream.destroyed) upstream.close(h2.NGHTTP2_CANCEL);
    };
    const finish = (trailers: Trailers) => {
      if (settle(Number(trailers["grpc-status"] ?? 0)) && !res.writableEnded && !res.destroyed) {
        sink.end(trailers);
      }
    };
    const fail = (err: ConnectError) => {
      if (finished) return;
      cancelUpstream();
      // A Connect unary error is its own response (JSON, HTTP status), not trailers.
      if ((wire === "connect" || wire === "connect-json") && !res.headersSent) {
        settle(err.code);
        connectError(res, err);
        return;
      }
      finish(trailersOf(err));
    };
    const sink: Sink =
      wire === "connect"
        ? unary(req, res, fail)
        : wire === "connect-json"
          ? unary(req, res, fail, route.method)
          : passThrough(wire, req, res, write, fail, route.method);
    const entry: Call = { streaming: route.streaming, abort: fail };
    active.add(entry);
    // A client gone first cancels the upstream call.
    res.once("close", () => {
      if (settle(Code.Canceled)) cancelUpstream();
    });
    try {
      if (route.streaming && stopping.streams) throw GATEWAY_STOPPING();
      const user = await opts.admit(route.method, header(req.headers, "authorization"), exchange);
      if (finished) return;
      if (route.streaming) release = opts.slots.open(user, fail);
      const body = await framesOf(wire, req, route.method, get);
      const asked = askedTimeoutMs(wire, req.headers);
      const timeoutMs = route.streaming
        ? Math.min(asked ?? timeouts.maxStreamMs, timeouts.maxStreamMs)
        : Math.min(asked ?? timeouts.defaultMs, timeouts.maxMs);
      const headers = await upstreamHeaders(route, req, exchange, timeoutMs);
      if (finished) return;
      timer = setTimeout(
        () => fail(new ConnectError("the deadline passed", Code.DeadlineExceeded)),
        timeoutMs,
      );
      const stream = route.upstream.request(headers);
      upstream = stream;
      let status: Trailers | undefined;
      let failure: ConnectError | undefined;
      // Data is forwarded only after a 200 with no status in it (not trailers-only).
      let open = false;
      stream.on("response", (h) => {
        const http = Number(h[":status"]);
        if (http !== 200) failure = httpError(http);
        else status = grpcFields(h);
        open = !failure && !status;
        if (open) sink.start();
      });
      stream.on("data", (chunk: Buffer) => {
        if (open && !finished) sink.data(chunk);
      });
      stream.on("trailers", (t) => {
        status ??= grpcFields(t);
      });
      stream.on("error", (err: Error) => {
        failure ??= new ConnectError(`upstream unavailable: ${err.message}`, Code.Unavailable);
      });
      stream.once("close", () => {
        if (finished) return;
        if (failure) return fail(failure);
        // Closed at the HTTP/2 level while paused data is still to be read: end after it.
        if (status && !stream.readableEnded) return void stream.once("end", () => finish(status ?? {}));
        if (status) return finish(status);
        const refused = stream.rstCode === h2.NGHTTP2_REFUSED_STREAM;
        fail(
          new ConnectError(
            refused ? "upstream refused the call" : "upstream ended the call without a status",
            refused ? Code.Unavailable : Code.Internal,
          ),
        );
      });
      stream.end(body);
    } catch (err) {
      if (err instanceof ConnectError) return fail(err);
      opts.log.error({ err, procedure: route.procedure }, "forwarding failed");
      fail(new ConnectError("internal error", Code.Internal));
    }
  };

  /** A Connect GET of a side-effect-free unary method, as the Connect unary POST it stands for. */
  const serveGet = (req: Request, res: Response, exchange: Exchange): boolean => {
    const url = req.url ?? "";
    const route = opts.routes.get(url.split("?")[0] ?? "");
    if (
      !route ||
      route.streaming ||
      route.method.idempotency !== MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS
    ) {
      return false;
    }
    const get = getQuery(req);
    const compression = get.compression ?? "identity";
    // Other codecs and compressions, and raw binary in a URL, are Connect's to answer.
    if (get.encoding !== "json" && !(get.encoding === "proto" && get.base64 === "1")) return false;
    if (compression !== "identity" && compression !== "gzip") return false;
    void call(route, get.encoding === "json" ? "connect-json" : "connect", req, res, exchange, get);
    return true;
  };

  const stopping = { streams: false };
  return {
    /** Forwards the request if it is one this path serves; false leaves it to Connect. */
    serve(req: Request, res: Response, exchange: Exchange): boolean {
      if (req.method === "GET") return serveGet(req, res, exchange);
      if (req.method !== "POST") return false;
      const type = (header(req.headers, "content-type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
      const wire = WIRES[type];
      const route = opts.routes.get(req.url ?? "");
      if (!wire || !route) return false;
      // gRPC needs trailers (HTTP/2); Connect binary unary and streaming need their own kind.
      if (wire === "grpc" && req.httpVersionMajor !== 2) return false;
      const streamWire = wire === "connect-stream" || wire === "connect-stream-json";
      if (route.streaming ? wire === "connect" || wire === "connect-json" : streamWire) return false;
      void call(route, wire, req, res, exchange);
      return true;
    },
    /** Ends open streams with UNAVAILABLE, and refuses new ones. */
    stopStreams() {
      stopping.streams = true;
      for (const c of [...active]) if (c.streaming) c.abort(GATEWAY_STOPPING());
    },
    /** Ends every call still open with UNAVAILABLE (a drain that ran out of time). */
    stopCalls() {
      for (const c of [...active]) c.abort(GATEWAY_STOPPING());
    },
  };
}
