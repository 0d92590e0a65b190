import assert from "node:assert/strict";
import { once } from "node:events";
import { request as http1Request } from "node:http";
import { type ClientHttp2Session, constants as h2constants, connect as http2Connect } from "node:http2";
import { connect as netConnect } from "node:net";
import { type TestContext, test } from "node:test";
import { type ConnectionLimits, createDualServer, type Handler } from "../src/http.ts";

// Small enough to keep the file fast, large enough for a loaded 2-core machine to answer a
// well-behaved client in time.
const LIMITS: ConnectionLimits = {
  headersTimeoutMs: 300,
  bodyTimeoutMs: 300,
  idleTimeoutMs: 300,
  maxConnections: 100,
};
// Longer than every timeout above (HTTP/1.1 times the whole request: headers + body).
const SLOW_GAP_MS = 1_200;
const TIMEOUT = { timeout: 10_000 };

// Reads the whole body like the Connect adapter does; /slow then streams two chunks far apart,
// as a server stream with a quiet subscription would.
const handler: Handler = (req, res) => {
  // A client cut off by a timeout aborts its request; that is the expected outcome here.
  req.on("error", () => {});
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "text/plain" });
    if (req.url !== "/slow") return void res.end("ok");
    res.write("first ");
    setTimeout(() => res.end("second"), SLOW_GAP_MS);
  });
};

async function serve(t: TestContext, limits: ConnectionLimits = LIMITS) {
  const dual = createDualServer(handler, limits);
  await new Promise<void>((resolve) => dual.server.listen(0, "127.0.0.1", resolve));
  t.after(async () => {
    const closed = once(dual.server, "close");
    dual.close();
    await closed;
  });
  const address = dual.server.address();
  assert.ok(address && typeof address === "object");
  return { port: address.port, server: dual.server };
}

/** A raw client socket, destroyed after the test, and everything it receives until it closes. */
async function dial(t: TestContext, port: number) {
  const socket = netConnect(port, "127.0.0.1");
  t.after(() => void socket.destroy());
  let received = "";
  socket.on("data", (chunk: Buffer) => {
    received += chunk.toString("latin1");
  });
  // The server may reset a connection it refuses; the 'close' that follows is what counts.
  socket.on("error", () => {});
  const closed = once(socket, "close").then(() => received);
  await once(socket, "connect");
  return { socket, closed, received: () => received };
}

function h2(t: TestContext, port: number): ClientHttp2Session {
  const session = http2Connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {});
  t.after(() => void session.destroy());
  return session;
}

/** Sends a request on an HTTP/2 session and resolves with its status and body. */
async function h2Fetch(session: ClientHttp2Session, path: string, body: string) {
  const stream = session.request({ ":method": "POST", ":path": path });
  stream.end(body);
  const [headers] = (await once(stream, "response")) as [Record<string, unknown>];
  let text = "";
  for await (const chunk of stream) text += String(chunk);
  return { status: headers[":status"], text };
}

// A whole 200 response whose (chunked) body is "ok".
const COMPLETE_OK = /^HTTP\/1\.1 200 .*\r\n\r\n2\r\nok\r\n0\r\n\r\n$/s;

const H2_PREFACE = Buffer.concat([
  Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"),
  // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
  Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]),
]);

test("a connection that never sends a byte is closed after the headers timeout", TIMEOUT, async (t) => {
  const { port } = await serve(t);
  const client = await dial(t, port);
  assert.equal(await client.closed, "");
});

test("partial HTTP/1.1 headers are answered 408 and the connection closed", TIMEOUT, async (t) => {
  const { port } = await serve(t);
  const client = await dial(t, port);
  client.socket.write("GET /partial HTTP/1.1\r\nHost: gateway\r\nX-Slow");
  assert.match(await client.closed, /^HTTP\/1\.1 408 /);
});

test("an HTTP/1.1 body that stalls is answered 408 and the connection closed", TIMEOUT, async (t) => {
  const { port } = await serve(t);
  const client = await dial(t, port);
  client.socket.write("POST /upload HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100\r\n\r\nonly part");
  assert.match(await client.closed, /^HTTP\/1\.1 408 /);
});

test("an HTTP/1.1 keep-alive connection is closed once idle after its response", TIMEOUT, async (t) => {
  const { port } = await serve(t);
  const client = await dial(t, port);
  client.socket.write("GET /ok HTTP/1.1\r\nHost: gateway\r\n\r\n");
  const received = await client.closed;
  assert.match(received, /^HTTP\/1\.1 200 /);
  assert.match(received, /keep-alive/i, "the connection was kept alive, then closed for idleness");
  assert.match(received, COMPLETE_OK);
});

test("an HTTP/2 connection that sends only the preface is closed", TIMEOUT, async (t) => {
  const { port } = await serve(t);
  const client = await dial(t, port);
  client.socket.write(H2_PREFACE);
  await client.closed;
});

test("an HTTP/2 session is closed once idle after its last stream", TIMEOUT, async (t) => {
  const { port } = await serve(t);
  const session = h2(t, port);
  const closed = once(session, "close");
  assert.deepEqual(await h2Fetch(session, "/ok", "hi"), { status: 200, text: "ok" });
  await closed;
});

test("an HTTP/2 stream whose body stalls is reset and its session still serves", TIMEOUT, async (t) => {
  const { port } = await serve(t);
  const session = h2(t, port);
  const stream = session.request({ ":method": "POST", ":path": "/upload" });
  stream.on("error", () => {});
  stream.write("only part");
  await once(stream, "close");
  assert.equal(stream.rstCode, h2constants.NGHTTP2_CANCEL);
  assert.deepEqual(await h2Fetch(session, "/ok", "hi"), { status: 200, text: "ok" });
});

test("a slow HTTP/1.1 streaming response outlives every timeout", TIMEOUT, async (t) => {
  const { port } = await serve(t);
  const req = http1Request({ host: "127.0.0.1", port, method: "POST", path: "/slow", agent: false });
  t.after(() => void req.destroy());
  req.end("subscribe");
  const [res] = await once(req, "response");
  let text = "";
  for await (const chunk of res) text += String(chunk);
  assert.equal(res.statusCode, 200);
  assert.equal(text, "first second");
});

test("a slow HTTP/2 streaming response outlives every timeout", TIMEOUT, async (t) => {
  const { port } = await serve(t);
  const session = h2(t, port);
  assert.deepEqual(await h2Fetch(session, "/slow", "subscribe"), { status: 200, text: "first second" });
});

test("beyond the connection cap a new connection is closed, the others stay open", TIMEOUT, async (t) => {
  // A long headers timeout: the held connections stay silent until the refused one is closed.
  const { port, server } = await serve(t, { ...LIMITS, headersTimeoutMs: 10_000, maxConnections: 3 });
  let accepted = 0;
  const allAccepted = new Promise<void>((resolve) =>
    server.on("connection", () => {
      if (++accepted === 3) resolve();
    }),
  );
  const held = [await dial(t, port), await dial(t, port), await dial(t, port)];
  await allAccepted;
  const refused = await dial(t, port);
  assert.equal(await refused.closed, "");
  for (const client of held) {
    client.socket.write("GET /ok HTTP/1.1\r\nHost: gateway\r\n\r\n");
    while (!COMPLETE_OK.test(client.received())) await once(client.socket, "data");
  }
});
