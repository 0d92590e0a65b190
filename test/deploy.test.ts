// k8s/, the Tiltfile and the Dockerfile name the services explicitly (they are read by tools,
// not by our code); this keeps them in step with the one list in packages/mesh.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { addressVariable, meshServices } from "@protomesh/mesh";

const root = join(import.meta.dirname, "..");
const read = (path: string) => readFileSync(join(root, path), "utf8");
const names = meshServices.map((s) => s.name).sort();

test("k8s has one folder per service, listed in the base, and nothing else", () => {
  const folders = readdirSync(join(root, "k8s/base/services")).sort();
  assert.deepEqual(folders, names);
  const listed = [...read("k8s/base/kustomization.yaml").matchAll(/^\s*-\s*services\/([\w-]+)\s*$/gm)].map(
    (m) => m[1],
  );
  assert.deepEqual(listed.sort(), names);
});

for (const s of meshServices) {
  test(`k8s runs ${s.name} as the list says: entry, port, probes, database, headless Service`, () => {
    const deployment = read(`k8s/base/services/${s.name}/deployment.yaml`);
    assert.match(deployment, new RegExp(`args: \\["services/${s.name}/src/main\\.ts"\\]`));
    assert.match(deployment, new RegExp(`containerPort: ${s.port}\\b`));
    assert.match(deployment, new RegExp(`name: PORT\\s+value: "${s.port}"`));
    assert.match(deployment, new RegExp(`protomesh\\.dev/database: protomesh_${s.name}\\b`));
    assert.match(deployment, new RegExp(`/protomesh_${s.name}\\b`), "DATABASE_URL names its own database");
    const probes = [...deployment.matchAll(/grpc:\s+port: (\d+)/g)].map((m) => Number(m[1]));
    assert.ok(probes.length >= 3 && probes.every((p) => p === s.port), `gRPC probes on ${s.port}`);
    const service = read(`k8s/base/services/${s.name}/service.yaml`);
    assert.match(service, /clusterIP: None/, "headless, so clients balance over pods");
    assert.match(service, new RegExp(`port: ${s.port}\\b`));
  });
}

test("config.env gives every service's address, and PostgreSQL creates every service's database", () => {
  const config = read("k8s/base/config.env");
  const addresses = [...config.matchAll(/^(\w+)_ADDR=dns:\/\/\/([\w-]+):(\d+)$/gm)].map(
    (m) => `${m[1]}=${m[2]}:${m[3]}`,
  );
  assert.deepEqual(
    addresses.sort(),
    meshServices.map((s) => `${addressVariable(s.name).replace(/_ADDR$/, "")}=${s.name}:${s.port}`).sort(),
  );
  const databases = [
    ...read("k8s/base/postgres/init-databases.sql").matchAll(/CREATE DATABASE protomesh_(\w+);/g),
  ];
  assert.deepEqual(databases.map((m) => m[1]).sort(), names);
});

test("the Tiltfile and the Dockerfile know every service and its port", () => {
  const tilt = read("Tiltfile");
  const block = /SERVICES = \{([^}]*)\}/.exec(tilt)?.[1] ?? "";
  const entries = [...block.matchAll(/'([\w-]+)': (\d+)/g)].map((m) => `${m[1]}:${m[2]}`);
  assert.deepEqual(entries.sort(), meshServices.map((s) => `${s.name}:${s.port}`).sort());
  const exposed = (/^EXPOSE (.*)$/m.exec(read("Dockerfile"))?.[1] ?? "").split(/\s+/).map(Number);
  for (const s of meshServices) assert.ok(exposed.includes(s.port), `Dockerfile exposes ${s.port}`);
});
