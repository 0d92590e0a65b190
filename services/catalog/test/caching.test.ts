// Browsing the shop through the gateway over GET: answers carry an ETag and a max-age, a repeat
// or an If-None-Match within the lifetime never reaches catalog, and a change shows once the
// lifetime (GATEWAY_CACHE_TTL_MS, documented in the README) has passed.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { metrics } from "@protomesh/platform";
import { type Mesh, startMesh, waitUntil } from "@protomesh/testkit";
import { type MeshCatalog, meshCatalog, newProduct } from "./helpers.ts";

const TTL_MS = 1_000;

let mesh: Mesh;
let catalog: MeshCatalog;
before(async () => {
  mesh = await startMesh({
    services: ["auth", "catalog"],
    gatewayEnv: { GATEWAY_CACHE_TTL_MS: String(TTL_MS) },
  });
  catalog = meshCatalog(mesh);
});
after(async () => {
  catalog?.close();
  await mesh?.stop();
});

/** GetProduct as a browser would fetch it: Connect GET with the message in the query. */
const getProduct = (productId: string, headers: Record<string, string> = {}) =>
  fetch(
    `${mesh.url}/protomesh.catalog.v1.CatalogService/GetProduct?connect=v1&encoding=json&message=${encodeURIComponent(JSON.stringify({ productId }))}`,
    { headers },
  );

/** The JSON a Connect GetProduct answers. */
type ProductJson = { product: { name: string; version: string } };
const productOf = async (res: Response) => (await res.json()) as ProductJson;

/** GetProduct calls catalog has served, in this process (the services run in it). */
async function served() {
  const counter = await metrics.getSingleMetric("grpc_server_handled_total")?.get();
  return (counter?.values ?? [])
    .filter(
      (v) => v.labels.service === "protomesh.catalog.v1.CatalogService" && v.labels.method === "GetProduct",
    )
    .reduce((n, v) => n + v.value, 0);
}

test("a repeated GET and an If-None-Match within the lifetime are answered without catalog", async () => {
  const id = await newProduct(catalog, 5, { name: "Cached kettle" });
  const before = await served();
  const first = await getProduct(id);
  assert.equal(first.status, 200);
  const etag = first.headers.get("etag");
  assert.ok(etag, "an ETag");
  assert.equal(first.headers.get("cache-control"), `public, max-age=${TTL_MS / 1000}`);
  assert.equal((await productOf(first)).product.name, "Cached kettle");

  const again = await getProduct(id);
  assert.equal(again.status, 200);
  assert.equal(again.headers.get("etag"), etag);
  await again.arrayBuffer();
  const revalidated = await getProduct(id, { "if-none-match": etag });
  assert.equal(revalidated.status, 304);
  assert.equal((await revalidated.text()).length, 0, "no body with 304");
  assert.equal((await served()) - before, 1, "catalog answered once for three GETs");
});

test("after UpdateProduct the new version is served once the cache lifetime has passed", async () => {
  const id = await newProduct(catalog, 5, { name: "Old name" });
  const first = await getProduct(id);
  const oldTag = first.headers.get("etag");
  assert.equal((await productOf(first)).product.version, "1");
  await catalog.updateProduct({
    productId: id,
    product: { name: "New name" },
    updateMask: { paths: ["name"] },
    expectedVersion: 1n,
  });
  // Whether the next GET still sees the kept answer depends on the clock; the new one must come.
  const fresh = await waitUntil(
    async () => {
      const res = await getProduct(id, { "if-none-match": oldTag ?? "" });
      if (res.status !== 200) return undefined;
      const body = await productOf(res);
      return body.product.name === "New name" ? { res, body } : undefined;
    },
    TTL_MS * 10,
    "the updated product through the gateway",
  );
  assert.equal(fresh.body.product.version, "2");
  assert.notEqual(fresh.res.headers.get("etag"), oldTag, "a new ETag for the new version");
});

test("an unknown product is not kept: each GET asks catalog", async () => {
  const unknown = crypto.randomUUID();
  const before = await served();
  for (let i = 0; i < 2; i++) {
    const res = await getProduct(unknown);
    assert.equal(res.status, 404);
    assert.equal(res.headers.get("cache-control"), "no-store");
    await res.arrayBuffer();
  }
  assert.equal((await served()) - before, 2);
});
