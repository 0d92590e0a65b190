import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fromBinary, fromJson, toBinary, toJson } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { createReflectionClient } from "@protomesh/devkit";
import { meshServices } from "@protomesh/mesh";
import { createHealthClient, HEALTH } from "@protomesh/platform";
import { type Mesh, startMesh, waitUntil, within } from "@protomesh/testkit";
import pg from "pg";

let mesh: Mesh;
before(async () => {
  mesh = await startMesh();
});
after(() => mesh?.stop());

describe("operations", () => {
  for (const { name, service } of meshServices) {
    test(`${name} reports SERVING on grpc.health.v1, for itself and its service`, async () => {
      const health = createHealthClient(mesh.addr(name));
      try {
        assert.equal(await health.check(""), "SERVING");
        assert.equal(await health.check(service.typeName), "SERVING");
        assert.equal(await health.check(HEALTH.liveness), "SERVING");
        await waitUntil(
          async () => (await health.check(HEALTH.events)) === "SERVING",
          10_000,
          "events SERVING",
        );
      } finally {
        health.close();
      }
    });

    for (const version of ["v1", "v1alpha"] as const) {
      test(`${name} lists its services over reflection ${version}`, async () => {
        const reflection = createReflectionClient(mesh.addr(name), { version });
        try {
          const services = await reflection.listServices();
          for (const listed of [
            service.typeName,
            "grpc.health.v1.Health",
            `grpc.reflection.${version}.ServerReflection`,
          ]) {
            assert.ok(services.includes(listed), `${listed} in ${services.join()}`);
          }
        } finally {
          reflection.close();
        }
      });
    }
  }

  test("a client with nothing but reflection can describe and call a method, as grpcurl does", async () => {
    const reflection = createReflectionClient(mesh.addr("auth"));
    const registry = await reflection.describe("protomesh.auth.v1.AuthService");
    reflection.close();
    const service = registry.getService("protomesh.auth.v1.AuthService");
    const method = service?.methods.find((m) => m.name === "SignIn");
    assert.ok(method, "SignIn is described");
    // The contract's validation rules travel with the descriptors.
    assert.ok(registry.getFile("buf/validate/validate.proto"));

    const client = new grpc.Client(mesh.addr("auth"), grpc.credentials.createInsecure());
    const request = fromJson(
      method.input,
      { email: "nobody@example.com", password: "whatever1" },
      { registry },
    );
    const err = await new Promise<grpc.ServiceError>((resolve, reject) =>
      client.makeUnaryRequest(
        `/${service?.typeName}/${method.name}`,
        (m: typeof request) => Buffer.from(toBinary(method.input, m)),
        (b: Buffer) => fromBinary(method.output, b),
        request,
        (e, res) =>
          e
            ? resolve(e)
            : reject(new Error(`unexpected success: ${JSON.stringify(toJson(method.output, res as never))}`)),
      ),
    );
    client.close();
    assert.equal(err.code, grpc.status.UNAUTHENTICATED);
    assert.equal(err.details, "wrong email or password");
  });
});

describe("readiness follows what a service needs to serve its calls", () => {
  test("NATS down: still SERVING (the outbox absorbs it), but events NOT_SERVING; back when NATS is", async (t) => {
    await mesh.nats.stop();
    t.after(() => mesh.nats.restart());
    const health = createHealthClient(mesh.addr("user"));
    t.after(() => health.close());
    await waitUntil(
      async () => (await health.check(HEALTH.events)) === "NOT_SERVING",
      10_000,
      "events NOT_SERVING",
    );
    assert.equal(await health.check(""), "SERVING");
    assert.equal(await health.check(HEALTH.liveness), "SERVING");
    const gatewayReady = await fetch(`${mesh.url}/readyz`);
    assert.equal(gatewayReady.status, 200, "the gateway stays ready");
    await mesh.nats.restart();
    await waitUntil(
      async () => (await health.check(HEALTH.events)) === "SERVING",
      15_000,
      "events SERVING again",
    );
  });

  test("a service started while NATS is down serves its calls, and its events start once NATS is back", async (t) => {
    await mesh.nats.stop();
    t.after(() => mesh.nats.restart());
    const replica = await mesh.start("user", { env: { PORT: "0" }, eventsInBackground: true });
    t.after(() => replica.stop());
    const health = createHealthClient(`127.0.0.1:${replica.port}`);
    t.after(() => health.close());
    assert.equal(await health.check(""), "SERVING", "ready: its database answers");
    assert.equal(await health.check(HEALTH.events), "NOT_SERVING");
    await mesh.nats.restart();
    await within(replica.eventsReady, 15_000, "events started");
    await waitUntil(async () => (await health.check(HEALTH.events)) === "SERVING", 15_000, "events SERVING");
  });

  test("database unreachable: NOT_SERVING within seconds, liveness still SERVING, and back", async (t) => {
    const url = new URL(mesh.env.user.DATABASE_URL as string);
    const database = url.pathname.slice(1);
    url.pathname = "/postgres";
    const admin = new pg.Client(url.toString());
    await admin.connect();
    const allow = (on: boolean) =>
      admin.query(`ALTER DATABASE ${admin.escapeIdentifier(database)} WITH ALLOW_CONNECTIONS ${on}`);
    t.after(async () => {
      await allow(true);
      await admin.end();
    });
    await allow(false);
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [
      database,
    ]);
    const health = createHealthClient(mesh.addr("user"));
    t.after(() => health.close());
    await waitUntil(async () => (await health.check("")) === "NOT_SERVING", 10_000, "user NOT_SERVING");
    assert.equal(await health.check(HEALTH.liveness), "SERVING");
    await allow(true);
    await waitUntil(async () => (await health.check("")) === "SERVING", 10_000, "user SERVING again");
  });
});
