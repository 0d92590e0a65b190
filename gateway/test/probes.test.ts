import assert from "node:assert/strict";
import { once } from "node:events";
import { connect as http2Connect } from "node:http2";
import { after, before, test } from "node:test";
import { type Nats, startNats } from "@protomesh/devkit";
import { meshServices } from "@protomesh/mesh";
import { createLogger } from "@protomesh/platform";
import { type RunningGateway, readGatewayConfig, startGateway } from "../src/index.ts";

// Probes need no upstream to answer: every upstream points at a port nothing listens on, so
// /readyz reports "not ready" and the gateway never reaches a service.
let gateway: RunningGateway;
let nats: Nats;
before(async () => {
  nats = await startNats();
  const env: Record<string, string> = {
    HOST: "127.0.0.1",
    PORT: "0",
    ACCESS_LOG: "off",
    NATS_URL: nats.url,
    GATEWAY_SECRET: "x".repeat(32),
  };
  for (const u of meshServices) env[`${u.name.toUpperCase()}_ADDR`] = "dns:///127.0.0.1:1";
  gateway = await startGateway(readGatewayConfig(meshServices, env), createLogger("gateway", "silent"));
});
after(async () => {
  await gateway?.stop();
  await nats?.stop();
});

for (const path of ["/healthz", "/readyz"]) {
  test(`HEAD ${path} answers like GET, without a body`, async () => {
    const get = await fetch(`${gateway.url}${path}`);
    const head = await fetch(`${gateway.url}${path}`, { method: "HEAD" });
    assert.equal(head.status, get.status);
    assert.equal(head.headers.get("content-type"), get.headers.get("content-type"));
    assert.notEqual(await get.text(), "");
    assert.equal(await head.text(), "");
  });
}

test("HEAD /healthz over HTTP/2 answers 200 without a body", async () => {
  const session = http2Connect(gateway.url);
  try {
    const stream = session.request({ ":method": "HEAD", ":path": "/healthz" }, { endStream: true });
    const [headers] = (await once(stream, "response")) as [Record<string, unknown>];
    let body = "";
    for await (const chunk of stream) body += String(chunk);
    assert.equal(headers[":status"], 200);
    assert.equal(body, "");
  } finally {
    session.destroy();
  }
});
