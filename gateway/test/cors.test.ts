import assert from "node:assert/strict";
import { once } from "node:events";
import { test } from "node:test";
import { readGatewayConfig } from "../src/config.ts";
import { createDualServer, handleCors, isOriginPattern, originAllowed } from "../src/http.ts";

const PATTERNS = ["https://app.example", "http://localhost:*", "http://[::1]:*", "http://127.0.0.1:8081"];

test("a configured origin and an origin matching a port pattern are allowed", () => {
  for (const origin of [
    "https://app.example",
    "https://app.example:443",
    "http://localhost:5173",
    "http://localhost:3000",
    "http://localhost",
    "http://[::1]:5173",
    "http://127.0.0.1:8081",
  ]) {
    assert.ok(originAllowed(origin, PATTERNS), origin);
  }
});

test("other hosts, schemes, ports and look-alike origins are refused", () => {
  for (const origin of [
    "https://evil.example",
    "https://app.example.evil.com",
    "https://evil-app.example",
    "http://app.example",
    "https://localhost:5173",
    "http://127.0.0.1:8082",
    "http://127.0.0.1",
    "http://localhost.evil.com:5173",
    "http://localhost:5173.evil.com",
    "http://evil.com@localhost:5173",
    "http://localhost:5173@evil.com",
    "http://user:pass@localhost:5173",
    "http://localhost:5173/path",
    "http://localhost:*",
    "http://[::2]:5173",
    "null",
    "",
  ]) {
    assert.equal(originAllowed(origin, PATTERNS), false, origin);
  }
});

test("a bare * allows any origin; no pattern allows none", () => {
  assert.ok(originAllowed("https://anything.example:8443", ["*"]));
  assert.equal(originAllowed("http://localhost:5173", []), false);
});

test("CORS_ORIGINS defaults to none and refuses entries that are not origins", () => {
  const env = { NATS_URL: "nats://127.0.0.1:4222", GATEWAY_SECRET: "x".repeat(32) };
  assert.deepEqual(readGatewayConfig([], env).corsOrigins, []);
  assert.deepEqual(readGatewayConfig([], { ...env, CORS_ORIGINS: "http://localhost:*, *" }).corsOrigins, [
    "http://localhost:*",
    "*",
  ]);
  for (const bad of [
    "localhost:5173",
    "http://localhost:5173/",
    "http://*.example",
    "http://localhost:51*",
  ]) {
    assert.equal(isOriginPattern(bad), false, bad);
    assert.throws(() => readGatewayConfig([], { ...env, CORS_ORIGINS: bad }), /CORS_ORIGINS/, bad);
  }
});

test("a preflight from an origin matching a pattern is answered with that origin", async (t) => {
  const dual = createDualServer((req, res) => {
    if (!handleCors(req, res, ["http://localhost:*"])) res.writeHead(200).end();
  });
  await new Promise<void>((resolve) => dual.server.listen(0, "127.0.0.1", resolve));
  t.after(async () => {
    const closed = once(dual.server, "close");
    dual.close();
    await closed;
  });
  const address = dual.server.address();
  assert.ok(address && typeof address === "object");
  const preflight = (origin: string) =>
    fetch(`http://127.0.0.1:${address.port}/protomesh.auth.v1.AuthService/SignIn`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST" },
    });
  const allowed = await preflight("http://localhost:5173");
  assert.equal(allowed.status, 204);
  assert.equal(allowed.headers.get("access-control-allow-origin"), "http://localhost:5173");
  const refused = await preflight("http://localhost.evil.com:5173");
  assert.equal(refused.status, 403);
  assert.equal(refused.headers.get("access-control-allow-origin"), null);
  assert.equal(refused.headers.get("vary"), "origin");
});
