// Whose address a service records: the gateway's word for it (proved by its credential) or a
// mesh service's; anyone else gets the address of its own socket, whatever header it sends.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { meshServices } from "@protomesh/mesh";
import {
  createGatewayCredentials,
  createMeshCredentials,
  createServiceClient,
  GATEWAY_TOKEN_HEADER,
} from "@protomesh/platform";
import { assertCode, gatewayClient } from "@protomesh/testkit";
import { SignJWT } from "jose";
import { createClientAddress } from "../src/client-address.ts";
import { readGatewayConfig } from "../src/index.ts";
import { type FakeMesh, startFakeMesh } from "./fakes.ts";

const SIGN_IN = { email: "ada@example.com", password: "correct horse battery staple" };

let mesh: FakeMesh;
before(async () => {
  mesh = await startFakeMesh();
});
after(() => mesh?.stop());

/** The address auth's SignIn saw for a call made with these headers, directly over gRPC. */
async function seenDirectly(headers: Record<string, string>, mesh2?: { token(): Promise<string> }) {
  const auth = createServiceClient(AuthService, mesh.authAddr, mesh2 ? { mesh: mesh2 } : {});
  try {
    const { result } = await auth.signIn(SIGN_IN, { headers });
    return result.case === "tokens" ? result.value.accessToken : undefined;
  } finally {
    auth.close();
  }
}

test("a service ignores the X-Forwarded-For of a direct caller and records its socket's address", async () => {
  assert.equal(await seenDirectly({ "x-forwarded-for": "203.0.113.9" }), "127.0.0.1");
});

test("a service believes X-Forwarded-For with a valid gateway credential, or from a mesh service", async () => {
  const gateway = await createGatewayCredentials(mesh.env.GATEWAY_SECRET ?? "").token();
  assert.equal(
    await seenDirectly({ "x-forwarded-for": "203.0.113.9", [GATEWAY_TOKEN_HEADER]: gateway }),
    "203.0.113.9",
  );
  const service = createMeshCredentials(mesh.env.MESH_SECRET ?? "", "orders");
  assert.equal(await seenDirectly({ "x-forwarded-for": "198.51.100.4" }, service), "198.51.100.4");
  // Whatever the header holds, only an address is recorded.
  assert.equal(
    await seenDirectly({ "x-forwarded-for": "not an address", [GATEWAY_TOKEN_HEADER]: gateway }),
    "127.0.0.1",
  );
});

test("a forged, foreign or too long-lived gateway credential fails the call", async () => {
  const sign = (secret: string, lifetime: string, audience = "protomesh-gateway") =>
    new SignJWT({})
      .setProtectedHeader({ alg: "HS256", typ: "gateway+jwt" })
      .setSubject("gateway")
      .setAudience(audience)
      .setIssuedAt()
      .setExpirationTime(lifetime)
      .sign(new TextEncoder().encode(secret));
  const right = mesh.env.GATEWAY_SECRET ?? "";
  const forged = [
    await sign("an attacker's guess at the secret, 32+ chars", "60s"),
    await sign(right, "3600s"),
    // A mesh token's audience signed with the gateway secret is no gateway credential either.
    await sign(right, "60s", "protomesh-mesh"),
    await createMeshCredentials(right, "gateway").token(),
  ];
  for (const token of forged) {
    await assertCode(
      seenDirectly({ "x-forwarded-for": "203.0.113.9", [GATEWAY_TOKEN_HEADER]: token }),
      Code.Unauthenticated,
      "forged gateway credential",
    );
  }
});

test("the gateway credential grants no access: INTERNAL methods stay closed to it", async () => {
  const user = createServiceClient(UserService, mesh.userAddr);
  try {
    const token = await createGatewayCredentials(mesh.env.GATEWAY_SECRET ?? "").token();
    await assertCode(
      user.createUser(
        { userId: crypto.randomUUID(), email: "eve@example.com", displayName: "Eve" },
        { headers: { [GATEWAY_TOKEN_HEADER]: token } },
      ),
      Code.PermissionDenied,
    );
  } finally {
    user.close();
  }
});

test("through the gateway, services see the client's socket address, not the X-Forwarded-For it sent", async () => {
  for (const protocol of ["connect-json", "grpc-web", "grpc"] as const) {
    const auth = gatewayClient(AuthService, mesh.url, protocol);
    const { result } = await auth.signIn(SIGN_IN, { headers: { "x-forwarded-for": "203.0.113.9" } });
    assert.equal(result.case === "tokens" && result.value.accessToken, "127.0.0.1", protocol);
  }
  const users = gatewayClient(UserService, mesh.url, "connect-json", () => undefined);
  const token = await mesh.tokenFor("u-1");
  const { user } = await users.getMe(
    {},
    { headers: { authorization: `Bearer ${token}`, "x-forwarded-for": "203.0.113.9" } },
  );
  assert.equal(user?.displayName, "127.0.0.1");
});

test("behind a trusted proxy, the client is the right-most X-Forwarded-For entry that is not a proxy", async () => {
  const gateway = await mesh.startGateway({ TRUSTED_PROXIES: "127.0.0.1,10.0.0.0/8" });
  const auth = gatewayClient(AuthService, gateway.url, "connect-json");
  const seen = async (xff: string) => {
    const { result } = await auth.signIn(SIGN_IN, { headers: { "x-forwarded-for": xff } });
    return result.case === "tokens" ? result.value.accessToken : undefined;
  };
  // The left entry is whatever the client claimed; the proxy appended the address it saw.
  assert.equal(await seen("198.51.100.1, 203.0.113.7"), "203.0.113.7");
  assert.equal(await seen("198.51.100.1, 203.0.113.7, 10.1.2.3"), "203.0.113.7");
  assert.equal(await seen("2001:db8::1"), "2001:db8::1");
});

test("client address: the socket's unless its peer is trusted; then right to left past trusted hops", () => {
  const none = createClientAddress([]);
  assert.equal(none("127.0.0.1", "203.0.113.9"), "127.0.0.1");
  assert.equal(none("::ffff:192.0.2.1", undefined), "192.0.2.1");
  const proxied = createClientAddress(["10.0.0.0/8", "fd00::/8"]);
  assert.equal(proxied("192.0.2.1", "203.0.113.9"), "192.0.2.1", "an untrusted peer's header is ignored");
  assert.equal(proxied("10.0.0.5", "203.0.113.9, 198.51.100.2"), "198.51.100.2");
  assert.equal(proxied("::ffff:10.0.0.5", "198.51.100.2:4711, 10.9.9.9"), "198.51.100.2");
  assert.equal(proxied("fd00::1", "[2001:db8::7]:443"), "2001:db8::7");
  assert.equal(proxied("10.0.0.5", "10.0.0.7, 10.0.0.6"), "10.0.0.7", "all trusted: the left-most");
  assert.equal(proxied("10.0.0.5", "junk, 10.0.0.6"), "10.0.0.6", "garbage: the last trusted hop");
  assert.equal(proxied("10.0.0.5", ""), "10.0.0.5");
});

test("the gateway refuses to start without GATEWAY_SECRET or with a TRUSTED_PROXIES entry that is no address", () => {
  const env = { NATS_URL: "nats://127.0.0.1:4222", GATEWAY_SECRET: "x".repeat(32) };
  assert.throws(
    () => readGatewayConfig(meshServices, { ...env, GATEWAY_SECRET: "" }),
    /GATEWAY_SECRET is required/,
  );
  assert.throws(
    () => readGatewayConfig(meshServices, { ...env, GATEWAY_SECRET: "short" }),
    /GATEWAY_SECRET must/,
  );
  assert.throws(
    () =>
      readGatewayConfig(meshServices, { ...env, TRUSTED_PROXIES: "10.0.0.0/8, proxy.local, 10.0.0.1/33" }),
    (err: Error) => /"proxy\.local"/.test(err.message) && /"10\.0\.0\.1\/33"/.test(err.message),
  );
});
