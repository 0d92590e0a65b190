// Every protocol the gateway serves, through the official clients, against one upstream: a
// grpc-js server of the user and notify contracts whose answers the test steers through the
// request (GetUser's user_id, UpdateMe's bio) or the caller's user id (WatchMyNotifications).
// Any change to the gateway's forwarding must pass this table.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create, type DescService, fromBinary, toBinary } from "@bufbuild/protobuf";
import { anyPack, durationFromMs } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "@protomesh/contracts/google/rpc/error_details_pb";
import { StatusSchema } from "@protomesh/contracts/google/rpc/status_pb";
import { NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { meshServices } from "@protomesh/mesh";
import { createLogger, createServiceClient } from "@protomesh/platform";
import { waitUntil, within } from "@protomesh/testkit";
import { type RunningGateway, readGatewayConfig, startGateway } from "../src/index.ts";
import { type FakeMesh, startFakeMesh } from "./fakes.ts";

const MAX_REQUEST_BYTES = 64 * 1024;
const DEFAULT_TIMEOUT_MS = 1_000;
const MAX_TIMEOUT_MS = 1_500;

/** What the upstream saw: calls by user id or steering string, and calls cancelled under it. */
const seen = { calls: new Map<string, number>(), cancelled: new Set<string>() };
const count = (key: string) => seen.calls.set(key, (seen.calls.get(key) ?? 0) + 1);

/** The error an upstream answers `fail:<code>` with: a message in several scripts, and details. */
const failure = (code: Code) => {
  const message = `nope: ü 中文 😀 ${Code[code]}`;
  const status = create(StatusSchema, {
    code,
    message,
    details: [
      anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason: "TEST_REASON", domain: "protomesh.test" })),
      anyPack(
        BadRequestSchema,
        create(BadRequestSchema, { fieldViolations: [{ field: "user_id", description: "ünï" }] }),
      ),
      anyPack(RetryInfoSchema, create(RetryInfoSchema, { retryDelay: durationFromMs(2_000) })),
    ],
  });
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, status)));
  return { code: code as number as grpc.status, details: message, metadata };
};

/** The caller's user id, read (not verified: the gateway did that) from its bearer token. */
const callerOf = (md: grpc.Metadata) => {
  const token = String(md.get("authorization")[0] ?? "").replace(/^Bearer /, "");
  const payload = token.split(".")[1] ?? "";
  return String(JSON.parse(Buffer.from(payload, "base64url").toString() || "{}").sub ?? "");
};

type Handler = (
  call: grpc.ServerUnaryCall<unknown, unknown> & grpc.ServerWritableStream<unknown, unknown>,
  cb: grpc.sendUnaryData<unknown>,
) => void;

/** A grpc-js service definition of a contract, with the handlers given (others UNIMPLEMENTED). */
function definition(service: DescService, handlers: Record<string, Handler>) {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const impl: grpc.UntypedServiceImplementation = {};
  for (const m of service.methods) {
    def[m.localName] = {
      path: `/${service.typeName}/${m.name}`,
      requestStream: false,
      responseStream: m.methodKind === "server_streaming",
      requestSerialize: (v: unknown) => Buffer.from(toBinary(m.input, v as never)) as Buffer,
      requestDeserialize: (b: Buffer) => fromBinary(m.input, b),
      responseSerialize: (v: unknown) =>
        Buffer.from(toBinary(m.output, create(m.output, v as never))) as Buffer,
      responseDeserialize: (b: Buffer) => fromBinary(m.output, b),
    };
    impl[m.localName] = (handlers[m.localName] ??
      ((_call: unknown, cb: grpc.sendUnaryData<unknown>) =>
        cb({ code: grpc.status.UNIMPLEMENTED, details: "not here" }))) as never;
  }
  return [def, impl] as const;
}

async function startUpstream(port = 0) {
  const server = new grpc.Server();
  server.addService(
    ...definition(UserService, {
      getUser(call, cb) {
        const id = (call.request as { userId: string }).userId;
        count(id);
        if (id.startsWith("fail:")) return cb(failure(Number(id.slice(5)) as Code));
        if (id === "hang") {
          // Never answers: the deadline or the client ends the call.
          call.on("cancelled", () => seen.cancelled.add(id));
          return;
        }
        cb(null, { profile: { id, displayName: id } });
      },
      updateMe(call, cb) {
        const bio = (call.request as { profile?: { bio: string } }).profile?.bio ?? "";
        count(`bio:${bio.length}`);
        cb(null, { user: { id: callerOf(call.metadata), bio } });
      },
    }),
  );
  server.addService(
    ...definition(NotifyService, {
      watchMyNotifications(call) {
        const who = callerOf(call.metadata);
        count(who);
        call.on("cancelled", () => seen.cancelled.add(who));
        // stream-<n>[-fail|-hang][.tag]: n messages, then OK, an error with details, or nothing
        // (the tag makes another user steered the same way).
        const [, n, end] = /^stream-(\d+)(?:-(fail|hang))?(?:\.\w+)?$/.exec(who) ?? [];
        for (let i = 0; i < Number(n ?? 0); i++) {
          call.write({ notification: { id: `n${i}`, kind: "test", subject: `message ${i} ü😀` } });
        }
        if (end === "hang") return;
        if (end === "fail") return void call.emit("error", failure(Code.FailedPrecondition));
        call.end();
      },
    }),
  );
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return {
    addr: `127.0.0.1:${bound}`,
    port: bound,
    stop: () => new Promise<void>((r) => server.tryShutdown(() => r())),
    kill: () => server.forceShutdown(),
  };
}

let mesh: FakeMesh;
let gateway: RunningGateway;
let upstream: Awaited<ReturnType<typeof startUpstream>>;
/** A gateway in front of the fake auth and the test's upstream (user and notify). */
const startTestGateway = (extra: Record<string, string>) =>
  startGateway(
    readGatewayConfig(
      meshServices.filter((s) => ["auth", "user", "notify"].includes(s.name)),
      {
        ...Object.fromEntries(Object.entries(mesh.env).filter(([k]) => k !== "MESH_SECRET")),
        PORT: "0",
        USER_ADDR: upstream.addr,
        NOTIFY_ADDR: upstream.addr,
        ...extra,
      },
    ),
    createLogger("gateway", process.env.TEST_LOG_LEVEL ?? "silent"),
  );

before(async () => {
  mesh = await startFakeMesh();
  upstream = await startUpstream();
  gateway = await startTestGateway({
    MAX_REQUEST_BYTES: String(MAX_REQUEST_BYTES),
    DEFAULT_TIMEOUT_MS: String(DEFAULT_TIMEOUT_MS),
    MAX_TIMEOUT_MS: String(MAX_TIMEOUT_MS),
    RATE_LIMIT_IP_PER_MINUTE: "0",
    RATE_LIMIT_USER_PER_MINUTE: "0",
  });
});
after(async () => {
  await gateway?.stop();
  await upstream?.stop();
  await mesh?.stop();
});

type Clients = { users: Client<typeof UserService>; notify: Client<typeof NotifyService> };

/** The clients of one protocol, each call carrying `token` when set. */
const PROTOCOLS: Record<string, (baseUrl: string) => Transport | "grpc-js"> = {
  "connect json (HTTP/1.1)": (baseUrl) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
  "connect binary (HTTP/1.1)": (baseUrl) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
  "connect binary (HTTP/2)": (baseUrl) =>
    createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true }),
  "grpc-web (HTTP/1.1)": (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
  "grpc (connect-node)": (baseUrl) => createGrpcTransport({ baseUrl }),
  "grpc, gzip both ways": (baseUrl) =>
    createGrpcTransport({ baseUrl, sendCompression: compressionGzip, compressMinBytes: 0 }),
  "connect json, gzip both ways": (baseUrl) =>
    createConnectTransport({
      baseUrl,
      httpVersion: "1.1",
      sendCompression: compressionGzip,
      compressMinBytes: 0,
    }),
  "connect binary, gzip both ways": (baseUrl) =>
    createConnectTransport({
      baseUrl,
      httpVersion: "2",
      useBinaryFormat: true,
      sendCompression: compressionGzip,
      compressMinBytes: 0,
    }),
  "connect json GET (HTTP/1.1)": (baseUrl) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", useHttpGet: true }),
  "connect binary GET (HTTP/2)": (baseUrl) =>
    createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, useHttpGet: true }),
  "grpc (grpc-js)": () => "grpc-js",
};

function clientsOf(protocol: string, token?: string): Clients & { close(): void } {
  const transport = PROTOCOLS[protocol]?.(gateway.url);
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  if (transport === "grpc-js" || transport === undefined) {
    const target = gateway.url.replace("http://", "");
    const users = createServiceClient(UserService, target);
    const notify = createServiceClient(NotifyService, target);
    // The platform's grpc-js client, with the call options the Connect clients take.
    const wrap = <T extends object>(c: T) =>
      new Proxy(c, {
        get: (t, k) => {
          const f = (t as Record<string | symbol, unknown>)[k];
          return typeof f === "function"
            ? (req: unknown, o: { signal?: AbortSignal; timeoutMs?: number } = {}) =>
                (f as (r: unknown, o: object) => unknown).call(t, req, { ...o, headers })
            : f;
        },
      });
    return {
      users: wrap(users) as never,
      notify: wrap(notify) as never,
      close: () => {
        users.close();
        notify.close();
      },
    };
  }
  const withToken = (service: DescService) => {
    const client = createClient(service, transport) as Record<string, (r: unknown, o?: object) => unknown>;
    return new Proxy(client, {
      get: (t, k) => {
        const f = t[k as string];
        return typeof f === "function" ? (r: unknown, o: object = {}) => f(r, { ...o, headers }) : f;
      },
    });
  };
  return { users: withToken(UserService) as never, notify: withToken(NotifyService) as never, close() {} };
}

async function rejection(p: Promise<unknown> | AsyncIterable<unknown>): Promise<ConnectError> {
  try {
    if (Symbol.asyncIterator in p) for await (const _ of p);
    else await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail("expected the call to fail");
}

const ERROR_CODES = [
  Code.InvalidArgument,
  Code.NotFound,
  Code.AlreadyExists,
  Code.PermissionDenied,
  Code.ResourceExhausted,
  Code.FailedPrecondition,
  Code.Aborted,
  Code.OutOfRange,
  Code.Unimplemented,
  Code.Unavailable,
  Code.Unauthenticated,
];

for (const protocol of Object.keys(PROTOCOLS)) {
  describe(protocol, () => {
    let c: ReturnType<typeof clientsOf>;
    let token: string;
    before(async () => {
      token = await mesh.tokenFor("protocol-user");
      c = clientsOf(protocol, token);
    });
    after(() => c?.close());

    test("a unary call succeeds and unicode survives both ways", async () => {
      for (const id of ["plain", "ünïcödé 中文 😀 \u0000 \u202e"]) {
        const { profile } = await c.users.getUser({ userId: id });
        assert.equal(profile?.id, id);
        assert.equal(profile?.displayName, id);
      }
    });

    test("every error code reaches the client with its message and details", async () => {
      for (const code of ERROR_CODES) {
        const err = await rejection(c.users.getUser({ userId: `fail:${code}` }));
        assert.equal(err.code, code, Code[code]);
        assert.equal(err.rawMessage, `nope: ü 中文 😀 ${Code[code]}`);
        assert.equal(err.findDetails(ErrorInfoSchema)[0]?.reason, "TEST_REASON", Code[code]);
        assert.equal(err.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.description, "ünï");
        assert.equal(Number(err.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds), 2);
      }
    });

    test("a USER method without a token is refused at the gateway", async () => {
      const anonymous = clientsOf(protocol);
      try {
        const before = seen.calls.get("anonymous") ?? 0;
        const err = await rejection(anonymous.users.getUser({ userId: "anonymous" }));
        assert.equal(err.code, Code.Unauthenticated);
        assert.equal(seen.calls.get("anonymous") ?? 0, before, "never forwarded");
      } finally {
        anonymous.close();
      }
    });

    test("an INTERNAL method is not routed", async () => {
      const err = await rejection(c.users.createUser({}));
      assert.equal(err.code, Code.Unimplemented);
    });

    test("the client's deadline ends the call with DEADLINE_EXCEEDED", async () => {
      const err = await rejection(c.users.getUser({ userId: "hang" }, { timeoutMs: 200 }));
      assert.equal(err.code, Code.DeadlineExceeded);
    });

    test("a call without a deadline gets the default, and a long one is capped", async () => {
      for (const timeoutMs of [undefined, 60_000]) {
        const started = Date.now();
        const err = await rejection(
          c.users.getUser({ userId: "hang" }, timeoutMs === undefined ? {} : { timeoutMs }),
        );
        assert.equal(err.code, Code.DeadlineExceeded);
        assert.ok(Date.now() - started < 10_000, "ended by the gateway's cap, long before the client's");
      }
    });

    test("a client that cancels cancels the upstream call", async () => {
      seen.cancelled.delete("hang");
      const ctl = new AbortController();
      const before = seen.calls.get("hang") ?? 0;
      const call = rejection(c.users.getUser({ userId: "hang" }, { signal: ctl.signal }));
      await waitUntil(() => (seen.calls.get("hang") ?? 0) > before, 5_000, "the call upstream");
      ctl.abort();
      assert.equal((await call).code, Code.Canceled);
      // Well before the gateway's default deadline would have ended it upstream anyway.
      await waitUntil(
        () => seen.cancelled.has("hang"),
        DEFAULT_TIMEOUT_MS / 2,
        "the upstream call cancelled",
      );
    });

    test("a message near the size limit passes; one over it is refused before the upstream", async () => {
      // Within 64 bytes of the limit, whatever the encoding adds (JSON's keys, protobuf's tags).
      const near = "é".repeat((MAX_REQUEST_BYTES - 64) / 2);
      const { user } = await c.users.updateMe({ profile: { bio: near }, updateMask: { paths: ["bio"] } });
      assert.equal(user?.bio, near);
      const over = "x".repeat(MAX_REQUEST_BYTES + 1);
      const err = await rejection(
        c.users.updateMe({ profile: { bio: over }, updateMask: { paths: ["bio"] } }),
      );
      assert.equal(err.code, Code.ResourceExhausted);
      assert.equal(seen.calls.get(`bio:${over.length}`), undefined, "never forwarded");
    });

    test("a server stream delivers every message, then its end", async () => {
      const streamer = clientsOf(protocol, await mesh.tokenFor("stream-5"));
      try {
        const subjects: string[] = [];
        for await (const m of streamer.notify.watchMyNotifications({}))
          subjects.push(m.notification?.subject ?? "");
        assert.deepEqual(
          subjects,
          [0, 1, 2, 3, 4].map((i) => `message ${i} ü😀`),
        );
      } finally {
        streamer.close();
      }
    });

    test("a server stream that fails delivers its messages, then the error with details", async () => {
      const streamer = clientsOf(protocol, await mesh.tokenFor("stream-2-fail"));
      try {
        const got: string[] = [];
        const err = await rejection(
          (async function* () {
            for await (const m of streamer.notify.watchMyNotifications({})) {
              got.push(m.notification?.id ?? "");
              yield m;
            }
          })(),
        );
        assert.deepEqual(got, ["n0", "n1"]);
        assert.equal(err.code, Code.FailedPrecondition);
        assert.equal(err.findDetails(ErrorInfoSchema)[0]?.reason, "TEST_REASON");
      } finally {
        streamer.close();
      }
    });

    test("cancelling a server stream cancels it upstream", async () => {
      const who = `stream-1-hang`;
      seen.cancelled.delete(who);
      const streamer = clientsOf(protocol, await mesh.tokenFor(who));
      try {
        const ctl = new AbortController();
        const it = streamer.notify.watchMyNotifications({}, { signal: ctl.signal })[Symbol.asyncIterator]();
        assert.equal((await it.next()).value?.notification?.id, "n0");
        ctl.abort();
        await it.next().catch(() => {});
        await waitUntil(() => seen.cancelled.has(who), 5_000, "the upstream stream cancelled");
      } finally {
        streamer.close();
      }
    });
  });
}

test("gRPC-web text (base64) carries messages and trailers both ways", async () => {
  const token = await mesh.tokenFor("text-user");
  const request = Buffer.from(
    toBinary(
      UserService.method.getUser.input,
      create(UserService.method.getUser.input, { userId: "texted ü" }),
    ),
  );
  const framed = Buffer.concat([Buffer.from([0, 0, 0, 0, request.length]), request]);
  const res = await fetch(`${gateway.url}/protomesh.user.v1.UserService/GetUser`, {
    method: "POST",
    headers: {
      "content-type": "application/grpc-web-text",
      accept: "application/grpc-web-text",
      authorization: `Bearer ${token}`,
      "x-grpc-web": "1",
    },
    body: framed.toString("base64"),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^application\/grpc-web-text/);
  const body = Buffer.from(await res.text(), "base64");
  const length = body.readUInt32BE(1);
  const message = fromBinary(UserService.method.getUser.output, body.subarray(5, 5 + length));
  assert.equal(message.profile?.displayName, "texted ü");
  const trailer = body.subarray(5 + length);
  assert.equal(trailer[0], 0x80);
  assert.match(trailer.subarray(5).toString(), /grpc-status: ?0/);
});

test("Connect JSON with invalid UTF-8 is refused with INVALID_ARGUMENT, unary, GET and streaming", async () => {
  const token = await mesh.tokenFor("bad-utf8");
  const bad = Buffer.concat([Buffer.from('{"userId":"x'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
  // Unary through the forwarder.
  const unary = await fetch(`${gateway.url}/protomesh.user.v1.UserService/GetUser`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: bad,
  });
  assert.equal(unary.status, 400);
  assert.equal(((await unary.json()) as { code: string }).code, "invalid_argument");
  // A Connect GET: the same bytes percent-encoded in its query.
  const get = await fetch(
    `${gateway.url}/protomesh.user.v1.UserService/GetUser?encoding=json&message=${[...bad].map((b) => `%${b.toString(16).padStart(2, "0")}`).join("")}`,
    { headers: { authorization: `Bearer ${token}` } },
  );
  assert.equal(get.status, 400);
  assert.equal(((await get.json()) as { code: string }).code, "invalid_argument");
  // Server streaming: one enveloped request.
  const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, 2]), Buffer.from("{}")]);
  frame.writeUInt32BE(bad.length, 1);
  const streamed = await fetch(`${gateway.url}/protomesh.notify.v1.NotifyService/WatchMyNotifications`, {
    method: "POST",
    headers: { "content-type": "application/connect+json", authorization: `Bearer ${token}` },
    body: Buffer.concat([frame.subarray(0, 5), bad]),
  });
  const body = Buffer.from(await streamed.arrayBuffer());
  // The end-stream frame (flag 0x02) carries the error.
  assert.equal(body[0], 0x02, "an end-stream frame");
  assert.match(body.subarray(5).toString(), /"code":"invalid_argument"/);
});

test("a stream whose client stops reading is ended with RESOURCE_EXHAUSTED, not buffered", async (t) => {
  const small = await startTestGateway({
    MAX_STREAM_BUFFER_BYTES: "1024",
  });
  t.after(() => small.stop());
  const who = "stream-3000-hang";
  seen.cancelled.delete(who);
  const token = await mesh.tokenFor(who);
  // A raw HTTP/2 client that never reads: the gateway's writes pile up behind flow control.
  const { connect } = await import("node:http2");
  const session = connect(small.url, { settings: { initialWindowSize: 1024 } });
  t.after(() => session.destroy());
  session.on("error", () => {});
  const req = create(NotifyService.method.watchMyNotifications.input, {});
  const bytes = toBinary(NotifyService.method.watchMyNotifications.input, req);
  const stream = session.request({
    ":method": "POST",
    ":path": "/protomesh.notify.v1.NotifyService/WatchMyNotifications",
    "content-type": "application/grpc",
    te: "trailers",
    authorization: `Bearer ${token}`,
  });
  stream.on("error", () => {});
  stream.end(Buffer.concat([Buffer.from([0, 0, 0, 0, bytes.length]), bytes]));
  stream.pause();
  await waitUntil(() => seen.cancelled.has(who), 10_000, "the upstream stream cancelled by the gateway");
  const trailers = new Promise<Record<string, unknown>>((resolve) => stream.once("trailers", resolve));
  stream.resume();
  assert.equal((await trailers)["grpc-status"], String(Code.ResourceExhausted));
});

test("a stream ends with UNAUTHENTICATED when its access token expires, whatever the protocol", async () => {
  const ends = Object.keys(PROTOCOLS).map(async (protocol, i) => {
    // Expires in 1–2 s (JWT times are whole seconds); the upstream here does not check it.
    const c = clientsOf(protocol, await mesh.tokenFor(`stream-1-hang.expiring${i}`, 2));
    try {
      const it = c.notify.watchMyNotifications({})[Symbol.asyncIterator]();
      assert.equal((await it.next()).value?.notification?.id, "n0", protocol);
      const err = await within(
        rejection({ [Symbol.asyncIterator]: () => it }),
        10_000,
        `${protocol}: the end`,
      );
      assert.equal(err.code, Code.Unauthenticated, `${protocol}: ${err.message}`);
    } finally {
      c.close();
    }
  });
  await Promise.all(ends);
});

test("streams are limited per user and in total; a closed stream frees its slot", async (t) => {
  const limited = await startTestGateway({
    STREAMS_PER_USER: "2",
    MAX_STREAMS: "3",
  });
  t.after(() => limited.stop());
  // gRPC is forwarded as bytes, Connect JSON transcoded: both count.
  const grpcT = createGrpcTransport({ baseUrl: limited.url });
  const jsonT = createConnectTransport({ baseUrl: limited.url, httpVersion: "1.1" });
  const ctl = new AbortController();
  t.after(() => ctl.abort());
  const open = async (transport: Transport, user: string, signal = ctl.signal) => {
    const notify = createClient(NotifyService, transport);
    const headers = { authorization: `Bearer ${await mesh.tokenFor(`stream-1-hang.${user}`)}` };
    const it = notify.watchMyNotifications({}, { headers, signal })[Symbol.asyncIterator]();
    const first = await it.next().then(
      (r) => r.value?.notification?.id,
      (err: unknown) => ConnectError.from(err).code,
    );
    return { first, it };
  };
  const alone = new AbortController();
  assert.equal((await open(grpcT, "a", alone.signal)).first, "n0");
  assert.equal((await open(jsonT, "a")).first, "n0");
  // A third of user a's, by either path, is refused; user b still gets one.
  assert.equal((await open(grpcT, "a")).first, Code.ResourceExhausted);
  assert.equal((await open(jsonT, "a")).first, Code.ResourceExhausted);
  // grpc-js decodes only what the gRPC spec escapes: the gateway's own message arrives whole.
  const grpcJs = createServiceClient(NotifyService, limited.url.replace("http://", ""));
  t.after(() => grpcJs.close());
  const refused = await rejection(
    grpcJs.watchMyNotifications(
      {},
      { headers: { authorization: `Bearer ${await mesh.tokenFor("stream-1-hang.a")}` } },
    ),
  );
  assert.equal(refused.rawMessage, "at most 2 open streams per user; close one first");
  assert.equal((await open(jsonT, "b")).first, "n0");
  // Three are open: the gateway's total is reached, for a user with none open too.
  assert.equal((await open(grpcT, "c")).first, Code.ResourceExhausted);
  alone.abort();
  await waitUntil(
    async () => (await open(grpcT, "c")).first === "n0",
    5_000,
    "a slot freed by the closed stream",
  );
});

test("after the upstream restarts, calls go through again on new sessions", async () => {
  const users = clientsOf("grpc (connect-node)", await mesh.tokenFor("restart-user")).users;
  assert.equal((await users.getUser({ userId: "before" })).profile?.id, "before");
  upstream.kill();
  const down = await rejection(users.getUser({ userId: "while-down" }));
  assert.equal(down.code, Code.Unavailable);
  upstream = await startUpstream(upstream.port);
  await waitUntil(
    () =>
      users.getUser({ userId: "after" }).then(
        (r) => r.profile?.id === "after",
        () => false,
      ),
    10_000,
    "a call through the restarted upstream",
  );
});
