// Rate limits as a client meets them: RESOURCE_EXHAUSTED with a retry delay it can read (RetryInfo
// and retry-after) on every protocol, counted per address and per user, shared by replicas.
// Distinct clients are simulated through a trusted proxy (127.0.0.1) and X-Forwarded-For.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type Client, Code, type ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { RetryInfoSchema } from "@protomesh/contracts/google/rpc/error_details_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { meshServices } from "@protomesh/mesh";
import { assertCode, gatewayClient, type Protocol, waitUntil } from "@protomesh/testkit";
import { readGatewayConfig } from "../src/index.ts";
import { type FakeMesh, startFakeMesh } from "./fakes.ts";

const STRICT = 3;
const PER_USER = 4;
const LIMITS = {
  TRUSTED_PROXIES: "127.0.0.1",
  CORS_ORIGINS: "http://app.example",
  RATE_LIMIT_STRICT_IP_PER_MINUTE: String(STRICT),
  RATE_LIMIT_USER_PER_MINUTE: String(PER_USER),
  RATE_LIMIT_IP_PER_MINUTE: "1000",
  RATE_LIMIT_STRICT_USER_PER_MINUTE: "0",
};
const SIGN_IN = { email: "ada@example.com", password: "correct horse battery staple" };

let mesh: FakeMesh;
before(async () => {
  mesh = await startFakeMesh(LIMITS);
});
after(() => mesh?.stop());

let clients = 0;
/** A client address no other test uses. */
const newAddress = () => {
  clients++;
  return `198.18.${clients >> 8}.${clients & 255}`;
};

const signIn = (auth: Client<typeof AuthService>, address: string) =>
  auth.signIn(SIGN_IN, { headers: { "x-forwarded-for": address } });

/** The retry delay a refusal carries, in seconds, after checking it is one. */
function retryDelayS(err: ConnectError): number {
  assert.equal(err.code, Code.ResourceExhausted, err.rawMessage);
  const info = err.findDetails(RetryInfoSchema)[0];
  assert.ok(info?.retryDelay, "a RetryInfo detail with a delay");
  const seconds = Number(info.retryDelay.seconds) + info.retryDelay.nanos / 1e9;
  assert.ok(seconds > 0 && seconds <= 60, `a delay within the window, got ${seconds} s`);
  const header = Number(err.metadata.get("retry-after"));
  assert.ok(Number.isInteger(header) && header >= 1 && header <= 60, `retry-after: ${header}`);
  assert.ok(Math.abs(header - seconds) <= 1, "retry-after and RetryInfo agree");
  return seconds;
}

test("the strict limit refuses the (N+1)th SignIn from one address, with a delay every protocol's client reads", async () => {
  const binary = createClient(
    AuthService,
    createConnectTransport({ baseUrl: mesh.url, httpVersion: "1.1", useBinaryFormat: true }),
  );
  const protocols: [string, Client<typeof AuthService>][] = [
    ...(["connect-json", "grpc-web", "grpc"] as Protocol[]).map(
      (p) => [p, gatewayClient(AuthService, mesh.url, p)] as [string, Client<typeof AuthService>],
    ),
    ["connect-binary", binary],
  ];
  for (const [protocol, auth] of protocols) {
    const address = newAddress();
    for (let i = 0; i < STRICT; i++) await signIn(auth, address);
    const err = await assertCode(signIn(auth, address), Code.ResourceExhausted, protocol);
    retryDelayS(err);
    assert.match(err.rawMessage, /too many requests from this address/);
    // Refused at the gateway: auth never saw the extra call.
    assert.equal(mesh.signIns.filter((a) => a === address).length, STRICT, protocol);
  }
});

test("a refusal is an HTTP 429 with retry-after for a plain Connect JSON client, readable from a browser", async () => {
  const address = newAddress();
  const call = () =>
    fetch(`${mesh.url}/protomesh.auth.v1.AuthService/SignIn`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-forwarded-for": address,
        origin: "http://app.example",
      },
      body: JSON.stringify(SIGN_IN),
    });
  for (let i = 0; i < STRICT; i++) assert.equal((await call()).status, 200);
  const refused = await call();
  assert.equal(refused.status, 429);
  assert.match(refused.headers.get("retry-after") ?? "", /^\d+$/);
  assert.match(refused.headers.get("access-control-expose-headers") ?? "", /retry-after/);
  const body = (await refused.json()) as { code: string; details?: { type: string }[] };
  assert.equal(body.code, "resource_exhausted");
  assert.ok(body.details?.some((d) => d.type === "google.rpc.RetryInfo"));
});

test("another address is not affected by one that used up its strict limit", async () => {
  const auth = gatewayClient(AuthService, mesh.url, "connect-json");
  const [busy, other] = [newAddress(), newAddress()];
  for (let i = 0; i < STRICT; i++) await signIn(auth, busy);
  await assertCode(signIn(auth, busy), Code.ResourceExhausted);
  const { result } = await signIn(auth, other);
  assert.equal(result.case, "tokens");
});

test("the strict limit holds across two gateway replicas sharing one NATS", async (t) => {
  const second = await mesh.startGateway();
  t.after(() => second.stop());
  // A replica limits on its own until NATS answers (that fallback is tested below); this test is
  // about two replicas that share.
  await waitUntil(
    () => second.limitsShared() && mesh.gateway.limitsShared(),
    15_000,
    "both replicas sharing",
  );
  const a = gatewayClient(AuthService, mesh.url, "connect-json");
  const b = gatewayClient(AuthService, second.url, "connect-json");
  const address = newAddress();
  // Spread over both: A, B, A, … — each replica alone has seen fewer than the limit.
  for (let i = 0; i < STRICT; i++) await signIn(i % 2 === 0 ? a : b, address);
  retryDelayS(await assertCode(signIn(STRICT % 2 === 0 ? a : b, address), Code.ResourceExhausted, "next"));
  retryDelayS(await assertCode(signIn(STRICT % 2 === 0 ? b : a, address), Code.ResourceExhausted, "other"));
  assert.equal(mesh.signIns.filter((x) => x === address).length, STRICT);
});

test("the per-user limit refuses a user's (N+1)th call from any address; other users go on", async () => {
  const users = gatewayClient(UserService, mesh.url, "grpc");
  const getMe = async (token: string) =>
    users.getMe({}, { headers: { authorization: `Bearer ${token}`, "x-forwarded-for": newAddress() } });
  const [busy, other] = [await mesh.tokenFor("user-busy"), await mesh.tokenFor("user-other")];
  for (let i = 0; i < PER_USER; i++) assert.equal((await getMe(busy)).user?.id, "user-busy");
  const err = await assertCode(getMe(busy), Code.ResourceExhausted, "over the user limit");
  retryDelayS(err);
  assert.match(err.rawMessage, /too many requests from this account/);
  assert.equal((await getMe(other)).user?.id, "user-other");
});

test("a limit of 0 is off, and limits are read from the environment", async (t) => {
  const open = await mesh.startGateway({ RATE_LIMIT_STRICT_IP_PER_MINUTE: "0" });
  t.after(() => open.stop());
  const auth = gatewayClient(AuthService, open.url, "connect-json");
  const address = newAddress();
  for (let i = 0; i < STRICT * 3; i++) await signIn(auth, address);

  const env = { NATS_URL: "nats://127.0.0.1:4222", GATEWAY_SECRET: "x".repeat(32) };
  const config = readGatewayConfig(meshServices, { ...env, RATE_LIMIT_USER_PER_MINUTE: "7" });
  assert.equal(config.rateLimits.userPerMinute, 7);
  assert.equal(config.rateLimits.strictIpPerMinute, 20, "a strict default");
  assert.throws(
    () => readGatewayConfig(meshServices, { ...env, RATE_LIMIT_STRICT_IP_PER_MINUTE: "lots" }),
    /RATE_LIMIT_STRICT_IP_PER_MINUTE/,
  );
});

test("refusals are counted by rule in the gateway's metrics", async () => {
  const metrics = await (await fetch(`${mesh.url}/metrics`)).text();
  assert.match(metrics, /gateway_rate_limited_total\{rule="strict_ip"\} [1-9]/);
  assert.match(metrics, /gateway_rate_limited_total\{rule="user"\} [1-9]/);
  assert.match(metrics, /^gateway_rate_limits_shared 1$/m);
});

test("with NATS down, each replica keeps limiting on its own and says so", async () => {
  const auth = gatewayClient(AuthService, mesh.url, "connect-json");
  await mesh.nats.stop();
  await waitUntil(
    async () => /^gateway_rate_limits_shared 0$/m.test(await (await fetch(`${mesh.url}/metrics`)).text()),
    10_000,
    "the gateway to notice NATS is down",
  );
  const address = newAddress();
  for (let i = 0; i < STRICT; i++) await signIn(auth, address);
  retryDelayS(await assertCode(signIn(auth, address), Code.ResourceExhausted, "strict, locally"));
});
