import assert from "node:assert/strict";
import {
  type AddressInfo,
  connect as connectNet,
  createServer as createNetServer,
  type Socket,
} from "node:net";
import { after, before, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { EmailVerifiedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { meshServices } from "@protomesh/mesh";
import { createLogger } from "@protomesh/platform";
import {
  failure,
  gatewayClient,
  type Mesh,
  publishEvent,
  signUpAndSignIn,
  startMesh,
  uniqueEmail,
  waitUntil,
  within,
} from "@protomesh/testkit";
import { readGatewayConfig, startGateway } from "../src/index.ts";

let mesh: Mesh;
before(async () => {
  mesh = await startMesh();
});
after(() => mesh?.stop());

const PASSWORD = "correct horse battery";

test("gRPC over cleartext HTTP/2 works on the same port as HTTP/1.1", async () => {
  const email = uniqueEmail("h2");
  const auth = gatewayClient(AuthService, mesh.url, "grpc");
  const { userId, tokens } = await signUpAndSignIn(auth, { email, password: PASSWORD, displayName: "Hal" });
  const users = gatewayClient(UserService, mesh.url, "grpc", () => tokens?.accessToken);
  assert.equal((await users.getMe({})).user?.id, userId);
});

test("CORS: a configured origin gets a preflight answer, any other is refused", async () => {
  const preflight = (origin: string) =>
    fetch(`${mesh.url}/protomesh.auth.v1.AuthService/SignIn`, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
      },
    });
  const allowed = await preflight("http://app.example");
  assert.equal(allowed.status, 204);
  assert.equal(allowed.headers.get("access-control-allow-origin"), "http://app.example");
  assert.match(allowed.headers.get("access-control-allow-headers") ?? "", /authorization/i);
  const denied = await preflight("http://evil.example");
  assert.equal(denied.status, 403);
  assert.equal(denied.headers.get("access-control-allow-origin"), null);
});

test("a request larger than the limit is refused before it reaches a service", async () => {
  const auth = gatewayClient(AuthService, mesh.url, "connect-json");
  const err = await auth
    .signIn({ email: `${"a".repeat(100_000)}@example.com`, password: PASSWORD })
    .then(() => assert.fail("expected a failure"))
    .catch((e) => e);
  assert.ok(err instanceof ConnectError);
  assert.equal(err.code, Code.ResourceExhausted);
});

test("every response carries a request id, the client's if it sent a well-formed one", async () => {
  const call = (id: string) =>
    fetch(`${mesh.url}/protomesh.auth.v1.AuthService/GetJwks`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": id },
      body: "{}",
    });
  assert.equal((await call("trace-123")).headers.get("x-request-id"), "trace-123");
  assert.match((await call("bad id with spaces")).headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
});

test("side-effect-free methods answer HTTP GET, so they can be cached", async () => {
  const res = await fetch(`${mesh.url}/protomesh.auth.v1.AuthService/GetJwks?encoding=json&message=%7B%7D`);
  assert.equal(res.status, 200);
  const body = (await res.json()) as { keys: { kty: string }[] };
  assert.equal(body.keys[0]?.kty, "OKP");
});

test("healthz, readyz and metrics answer; readyz turns 503 when an upstream is down", async () => {
  assert.equal((await fetch(`${mesh.url}/healthz`)).status, 200);
  assert.equal((await fetch(`${mesh.url}/readyz`)).status, 200);
  const metrics = await (await fetch(`${mesh.url}/metrics`)).text();
  assert.match(
    metrics,
    /gateway_request_seconds_bucket\{.*procedure="protomesh\.auth\.v1\.AuthService\/GetJwks"/,
  );

  await mesh.services.notify?.stop();
  try {
    // readyz caches its answer for a second; wait for the fresh one rather than a fixed time.
    const deadline = Date.now() + 10_000;
    let status = 200;
    while (status !== 503 && Date.now() < deadline) status = (await fetch(`${mesh.url}/readyz`)).status;
    assert.equal(status, 503);
  } finally {
    await mesh.start("notify");
  }
});

test("a gateway is not ready until it holds auth's keys, keeps fetching them until it does, and then signs nobody out when auth goes away", async (t) => {
  const auth = gatewayClient(AuthService, mesh.url, "connect-json");
  const { userId, tokens } = await signUpAndSignIn(auth, {
    email: uniqueEmail("gw-keys"),
    password: PASSWORD,
    displayName: "Kay",
  });
  // The new replica fetches auth's keys through a switch that cuts every connection until it is
  // on; every upstream it routes to is up. After a restart of everything, the first storm of
  // calls must not all wait on (and fail with) one key fetch.
  const [authHost, authPort] = mesh.addr("auth").split(":");
  let keysReachable = false;
  const routed = new Set<Socket>();
  const keysRoute = createNetServer((socket) => {
    if (!keysReachable) return void socket.destroy();
    routed.add(socket);
    const upstream = connectNet(Number(authPort), authHost);
    socket.pipe(upstream).pipe(socket);
    for (const end of [socket, upstream]) {
      end.on("error", () => {});
      end.on("close", () => {
        socket.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => keysRoute.listen(0, "127.0.0.1", resolve));
  t.after(() => keysRoute.close());
  const fresh = await startGateway(
    readGatewayConfig(
      meshServices.filter((s) => s.name !== "auth"),
      { ...mesh.env.auth, PORT: "0", AUTH_ADDR: `127.0.0.1:${(keysRoute.address() as AddressInfo).port}` },
    ),
    createLogger("gateway", "silent"),
  );
  t.after(() => fresh.stop());
  const readiness = async () => {
    const res = await fetch(`${fresh.url}/readyz`);
    return `${res.status} ${await res.text()}`;
  };
  await waitUntil(
    async () => (await readiness()) === "503 not ready: auth's signing keys not loaded",
    10_000,
    "the upstreams are up; only the keys are missing",
  );
  keysReachable = true;
  // The loader retries at most 5 s apart, and grpc-js reconnects after a backoff of its own.
  await waitUntil(async () => (await readiness()) === "200 ready", 30_000, "ready once the keys load");
  keysReachable = false;
  for (const socket of routed) socket.destroy();
  const users = gatewayClient(UserService, fresh.url, "grpc", () => tokens?.accessToken);
  assert.equal((await users.getMe({})).user?.id, userId);
});

test("an unknown JSON field is refused with INVALID_ARGUMENT naming it, not silently ignored", async () => {
  const res = await fetch(`${mesh.url}/protomesh.auth.v1.AuthService/SignIn`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: "ada@example.com", pasword: "correct horse battery" }),
  });
  assert.equal(res.status, 400);
  const body = (await res.json()) as { code: string; message: string };
  assert.equal(body.code, "invalid_argument");
  assert.match(body.message, /pasword/);
});

test("HEAD /healthz and /readyz answer like GET, without a body", async () => {
  // readyz may still remember notify restarting in the test before.
  await waitUntil(async () => (await fetch(`${mesh.url}/readyz`)).ok, 10_000, "ready");
  for (const path of ["/healthz", "/readyz"]) {
    const res = await fetch(`${mesh.url}${path}`, { method: "HEAD" });
    assert.equal(res.status, 200, path);
    assert.equal(await res.text(), "");
  }
});

test("metrics and access logs name status codes the same way (gRPC's canonical names)", async () => {
  const auth = gatewayClient(AuthService, mesh.url, "connect-json");
  await auth.getJwks({});
  await auth.signIn({ email: "", password: "x" }).catch(() => {});
  const metrics = await (await fetch(`${mesh.url}/metrics`)).text();
  assert.match(
    metrics,
    /gateway_request_seconds_count\{procedure="protomesh\.auth\.v1\.AuthService\/GetJwks",code="OK"\}/,
  );
  assert.match(
    metrics,
    /gateway_request_seconds_count\{procedure="protomesh\.auth\.v1\.AuthService\/SignIn",code="INVALID_ARGUMENT"\}/,
  );
});

test("stopping the gateway ends open streams at once with UNAVAILABLE, so clients reconnect", async (t) => {
  const second = await startGateway(
    readGatewayConfig(meshServices, { ...mesh.env.auth, PORT: "0", SHUTDOWN_TIMEOUT_MS: "30000" }),
    createLogger("gateway", "silent"),
  );
  t.after(() => second.stop());
  const auth = gatewayClient(AuthService, mesh.url, "connect-json");
  const email = uniqueEmail("gw-stop");
  const { userId, tokens } = await signUpAndSignIn(auth, { email, password: PASSWORD, displayName: "Gus" });
  await mesh.smtp.waitFor((m) => m.to.includes(email));
  const streams = (["connect-json", "grpc"] as const).map((protocol) =>
    gatewayClient(NotifyService, second.url, protocol, () => tokens?.accessToken)
      .watchMyNotifications({})
      [Symbol.asyncIterator](),
  );
  const firsts = streams.map((s) => s.next());
  // A welcome for the same user: one notification that every open stream receives.
  await publishEvent(mesh.nats.url, EmailVerifiedSchema, { userId, email, displayName: "Gus" });
  // A message through each stream proves it open end to end.
  for (const first of firsts) assert.equal((await within(first, 15_000, "a first message")).done, false);
  const ends = streams.map((s) => failure({ [Symbol.asyncIterator]: () => s }));
  const started = Date.now();
  await within(second.stop(), 10_000, "gateway stop");
  for (const end of ends) assert.equal((await within(end, 5_000, "the stream end")).code, Code.Unavailable);
  assert.ok(Date.now() - started < 5_000, "stop did not wait out its 30 s drain timeout");
});
