// The commerce figures of `npm run bench` (issue 7): PlaceOrder through the gateway against the
// raw rate of the stock decrement it rests on, with and without contention, and the catalog's
// GET reads with the gateway's cache on and off. Runs only when catalog and orders are in the
// mesh's service list.
import * as http from "node:http";
import { type Client, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { CatalogService } from "@protomesh/contracts/catalog/v1/catalog_pb";
import { OrdersService } from "@protomesh/contracts/orders/v1/orders_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import type { Smtp } from "@protomesh/devkit";
import { createMeshCredentials, createServiceClient } from "@protomesh/platform";
import { codeIn, MAIL } from "@protomesh/testkit";
import pg from "pg";
import { signIn } from "./identity.ts";
import { type BenchRun, formatTable, interleaved, runLoad } from "./load.ts";

/** What the commerce part needs from the run that started the mesh. */
export interface CommerceContext extends BenchRun {
  /** The gateway every other figure goes through. */
  gatewayUrl: string;
  /** Starts one more gateway with these settings added, and returns its URL. */
  startGateway(env: Record<string, string>): Promise<string>;
  /** catalog's gRPC address, for creating products as a mesh service (no admin account needed). */
  catalogAddr: string;
  meshSecret: string;
  smtp: Smtp;
  /** Creates a database on the run's PostgreSQL and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Concurrency of the GET reads. */
  readConcurrency: number;
  /** false: only the stock decrement and PlaceOrder, without the catalog reads. */
  reads: boolean;
}

// Workers placing orders at once, and the pg clients of the raw baseline: the same number.
const ORDER_CONCURRENCY = 8;
// Enough stock that no run sells out (int32; the contract allows up to 10⁹ at creation).
const STOCK = 1_000_000_000;
const PRODUCTS_FOR_SEARCH = 50;
// The gateway setting that turns its GET cache off (gateway/src/config.ts: 0 keeps nothing).
const CACHE_OFF = { GATEWAY_CACHE_TTL_MS: "0" };

const DECREMENT = "UPDATE products SET stock = stock - $1 WHERE id = $2 AND stock >= $1";

/** True when the mesh runs both catalog and orders. */
export const hasCommerce = (services: readonly { name: string }[]) =>
  ["catalog", "orders"].every((name) => services.some((s) => s.name === name));

/** Runs the commerce measurements and prints their tables. */
export async function commerceBench(ctx: CommerceContext): Promise<void> {
  // Baseline: the bare conditional decrement, one statement per transaction, on the same server.
  const [rawSpread, rawHot] = await rawDecrement(ctx);

  // Products and buyers. Products are made as a mesh service would (ADMIN methods accept one).
  const catalog = createServiceClient(CatalogService, ctx.catalogAddr, {
    mesh: createMeshCredentials(ctx.meshSecret, "bench"),
  });
  ctx.onClose(() => catalog.close());
  const product = async (i: number, stock: number) => {
    const { product } = await catalog.createProduct({
      product: {
        name: `Bench widget ${ctx.runId} ${i}`,
        description: `A sturdy widget for measuring, number ${i}`,
        category: "bench",
        price: { currency: "EUR", amountMinor: BigInt(100 + i) },
      },
      initialStock: stock,
    });
    if (!product) throw new Error("CreateProduct answered without a product");
    return product.id;
  };
  const hot = await product(0, STOCK);
  const own: string[] = [];
  for (let i = 1; i <= ORDER_CONCURRENCY; i++) own.push(await product(i, STOCK));
  const buyers = await Promise.all(
    Array.from({ length: ORDER_CONCURRENCY }, (_, i) => verifiedAccount(ctx, `buyer-${i}`)),
  );

  const orders = createClient(OrdersService, transportFor(ctx, ctx.gatewayUrl));
  let seq = 0;
  let placedHot = 0;
  const place = (productId: (worker: number) => string) => async (worker: number) => {
    const id = productId(worker);
    await orders.placeOrder(
      {
        lines: [{ productId: id, quantity: 1 }],
        idempotencyKey: `bench-${ctx.runId}-${worker}-${++seq}`,
      },
      { headers: { authorization: `Bearer ${buyers[worker]}` }, timeoutMs: 10_000 },
    );
    if (id === hot) placedHot++;
  };
  // One hop's worth: the same client, gateway, buyers and concurrency, on a call that reads one
  // row. PlaceOrder's cost in such hops says more on this machine than the raw UPDATE does.
  const users = createClient(UserService, transportFor(ctx, ctx.gatewayUrl));
  const getMe = async (worker: number) =>
    users.getMe({}, { headers: { authorization: `Bearer ${buyers[worker]}` }, timeoutMs: 10_000 });
  const [spread, contended, oneHop] = await interleaved(ctx.rounds, [
    measure(
      ctx,
      `PlaceOrder, own product per worker (gateway, c=${ORDER_CONCURRENCY})`,
      ORDER_CONCURRENCY,
      place((w) => own[w] ?? hot),
    ),
    measure(
      ctx,
      `PlaceOrder, one hot product (gateway, c=${ORDER_CONCURRENCY})`,
      ORDER_CONCURRENCY,
      place(() => hot),
    ),
    measure(ctx, `GetMe (gateway, c=${ORDER_CONCURRENCY}), the same buyers`, ORDER_CONCURRENCY, getMe),
  ]);
  const hotLeft = (await catalog.getProduct({ productId: hot })).product?.stock ?? Number.NaN;

  console.log(`\n## Commerce: stock decrement and PlaceOrder, ${ORDER_CONCURRENCY} at once\n`);
  if (!rawSpread || !rawHot || !spread || !contended || !oneHop)
    throw new Error("a commerce measurement is missing");
  console.log(formatTable([rawSpread, rawHot, spread, contended, oneHop], rawSpread.name));
  console.log(
    `\nPlaceOrder without contention / raw UPDATE without contention: ${(spread.rps / rawSpread.rps).toFixed(3)}× (target ≥ 0.25)`,
  );
  console.log(
    `PlaceOrder without contention / GetMe through the same gateway: ${(spread.rps / oneHop.rps).toFixed(3)}×`,
  );
  console.log(
    `PlaceOrder on one hot product / without contention: ${(contended.rps / spread.rps).toFixed(2)}× (target ≥ 0.50); ` +
      `raw UPDATE one row / own rows: ${(rawHot.rps / rawSpread.rps).toFixed(2)}×`,
  );
  console.log(
    `hot product: ${placedHot} orders placed (warm-up included), stock fell by ${STOCK - hotLeft}` +
      (STOCK - hotLeft === placedHot ? " (equal)" : " (NOT equal: check reservations)"),
  );

  if (!ctx.reads) return;
  // Reads over Connect GET through two new gateways, one with its cache as configured by default
  // and one without: both start cold, so neither has a warmer JIT than the other.
  for (let i = ORDER_CONCURRENCY + 1; i <= PRODUCTS_FOR_SEARCH; i++) await product(i, 100);
  const [cachedUrl, uncachedUrl] = await Promise.all([ctx.startGateway({}), ctx.startGateway(CACHE_OFF)]);
  const reader = (baseUrl: string) => createClient(CatalogService, transportFor(ctx, baseUrl, true));
  const cached = reader(cachedUrl);
  const uncached = reader(uncachedUrl);
  const getProduct = (c: Client<typeof CatalogService>) => () => c.getProduct({ productId: hot });
  const search = (c: Client<typeof CatalogService>) => () =>
    c.listProducts({ query: "sturdy widget", pageSize: 20 });
  const read = (name: string, call: () => Promise<unknown>) =>
    measure(ctx, `${name} (GET, c=${ctx.readConcurrency})`, ctx.readConcurrency, call);
  const reads = await interleaved(ctx.rounds, [
    read("GetProduct, cache off", getProduct(uncached)),
    read("GetProduct, cache on", getProduct(cached)),
  ]);
  reads.push(
    ...(await interleaved(ctx.rounds, [
      read("ListProducts search, cache off", search(uncached)),
      read("ListProducts search, cache on", search(cached)),
    ])),
  );
  console.log(`\n## Catalog reads over Connect GET through the gateway, cache on and off\n`);
  console.log(formatTable(reads, reads[0]?.name));
  const ratio = (on: number, off: number) =>
    `${((reads[on]?.rps ?? 0) / (reads[off]?.rps ?? 1)).toFixed(2)}× requests/s, p99 ${((reads[on]?.p99Ms ?? 0) / (reads[off]?.p99Ms ?? 1)).toFixed(2)}×`;
  console.log(`\ncache on / off: GetProduct ${ratio(1, 0)}; ListProducts ${ratio(3, 2)}`);
  console.log(
    `headers: cache on "${await cacheHeaders(cachedUrl, hot)}"; cache off "${await cacheHeaders(uncachedUrl, hot)}"`,
  );
}

/** The raw conditional decrement, on rows of its own per client and on one shared row. */
async function rawDecrement(ctx: CommerceContext) {
  const url = await ctx.createDatabase(`protomesh_bench_${ctx.runId}`);
  const clients = Array.from({ length: ORDER_CONCURRENCY }, () => new pg.Client({ connectionString: url }));
  await Promise.all(clients.map((c) => c.connect()));
  ctx.onClose(() => Promise.all(clients.map((c) => c.end())));
  const [first] = clients;
  if (!first) throw new Error("no pg client");
  await first.query("CREATE TABLE products (id uuid PRIMARY KEY, stock integer NOT NULL)");
  const { rows } = await first.query<{ id: string }>(
    "INSERT INTO products (id, stock) SELECT gen_random_uuid(), $1 FROM generate_series(0, $2) RETURNING id",
    [STOCK, ORDER_CONCURRENCY],
  );
  const ids = rows.map((r) => r.id);
  const hotId = ids[ORDER_CONCURRENCY] as string;
  const decrement = (id: (worker: number) => string) => async (worker: number) => {
    const res = await clients[worker]?.query({ name: "decrement", text: DECREMENT, values: [1, id(worker)] });
    if (res?.rowCount !== 1) throw new Error("the decrement changed no row");
  };
  return interleaved(ctx.rounds, [
    measure(
      ctx,
      `raw UPDATE, own row per client (${ORDER_CONCURRENCY} pg clients)`,
      ORDER_CONCURRENCY,
      decrement((w) => ids[w] as string),
    ),
    measure(
      ctx,
      `raw UPDATE, one row (${ORDER_CONCURRENCY} pg clients)`,
      ORDER_CONCURRENCY,
      decrement(() => hotId),
    ),
  ]);
}

/** A closed-loop run with the bench's duration, warm-up and request cap. */
function measure(
  ctx: CommerceContext,
  name: string,
  concurrency: number,
  call: (worker: number) => Promise<unknown>,
) {
  return { name, run: () => runLoad({ name, concurrency, call, ...ctx.load }) };
}

/** A signed-up account with a verified email; returns an access token that says so. */
async function verifiedAccount(ctx: CommerceContext, name: string): Promise<string> {
  const auth = createClient(AuthService, transportFor(ctx, ctx.gatewayUrl));
  const email = `bench-${ctx.runId}-${name}@example.com`;
  const mail = ctx.smtp.waitFor((m) => m.to.includes(email) && m.subject === MAIL.verify);
  await auth.signUp({ email, password: ctx.password, displayName: name });
  const code = codeIn(await mail);
  const first = await signIn(auth, email, ctx.password);
  await auth.verifyEmail({ code }, { headers: { authorization: `Bearer ${first}` } });
  // The token from before the verification says unverified: a fresh sign-in gets one that does not.
  return signIn(auth, email, ctx.password);
}

/** A Connect JSON transport over HTTP/1.1 with its own keep-alive agent, released at the end. */
function transportFor(ctx: CommerceContext, baseUrl: string, useHttpGet = false): Transport {
  const agent = new http.Agent({ keepAlive: true });
  ctx.onClose(() => agent.destroy());
  return createConnectTransport({ baseUrl, httpVersion: "1.1", useHttpGet, nodeOptions: { agent } });
}

/** The caching headers a Connect GET of GetProduct gets, for the record. */
async function cacheHeaders(baseUrl: string, productId: string): Promise<string> {
  const message = encodeURIComponent(JSON.stringify({ productId }));
  const res = await fetch(
    `${baseUrl}/${CatalogService.typeName}/GetProduct?connect=v1&encoding=json&message=${message}`,
  );
  await res.arrayBuffer();
  const etag = res.headers.get("etag");
  return `${res.status}; cache-control: ${res.headers.get("cache-control") ?? "none"}; etag: ${etag ? "yes" : "none"}`;
}
