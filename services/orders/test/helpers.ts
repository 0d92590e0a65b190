// What orders' tests share: a shop mesh, shoppers and admins signed in through the gateway,
// products in catalog, and looks into orders' database and the ORDERS stream.
import { type DescMessage, fromBinary, type MessageShape, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { type Order, OrderSchema, OrdersService } from "@protomesh/contracts/orders/v1/orders_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { ADMIN_ROLE, createMeshCredentials, createServiceClient } from "@protomesh/platform";
import {
  gatewayClient,
  type Mesh,
  type MeshOptions,
  query,
  signUpAndSignIn,
  startMesh,
} from "@protomesh/testkit";
import { connect } from "nats";

import { catalogDb } from "../../catalog/test/helpers.ts";

export { heldUnits, type MeshCatalog, meshCatalog, newProduct, stockOf } from "../../catalog/test/helpers.ts";

/** The state of an order id's reservation in catalog (reserved, committed, released, expired). */
export async function catalogState(mesh: Mesh, orderId: string): Promise<string | undefined> {
  const [row] = await catalogDb<{ state: string }>(
    mesh,
    "SELECT state FROM reservations WHERE order_id = $1",
    [orderId],
  );
  return row?.state;
}

/** auth, user, catalog and orders behind the gateway; settings of a test's own on top. */
export function startShop(env: MeshOptions["env"] = {}): Promise<Mesh> {
  return startMesh({
    services: ["auth", "user", "catalog", "orders"],
    env: { ...env, catalog: { CATALOG_SEED_DEMO: "false", ...env.catalog } },
  });
}

/** A signed-in user with an OrdersService client of the gateway carrying their token. */
export async function shopper(mesh: Mesh, name = "Shopper") {
  const auth = gatewayClient(AuthService, mesh.url, "connect-json");
  const account = await signUpAndSignIn(auth, { displayName: name });
  const session = {
    ...account,
    token: account.accessToken,
    orders: gatewayClient(OrdersService, mesh.url, "connect-json", (): string => session.token),
    /** Signs in again, so the token carries the roles the user has now. */
    async signInAgain() {
      const { result } = await auth.signIn({ email: account.email, password: account.password });
      if (result.case !== "tokens") throw new Error(`sign-in did not return tokens (${result.case})`);
      session.token = result.value.accessToken;
    },
  };
  return session;
}

export type Shopper = Awaited<ReturnType<typeof shopper>>;

/** `count` shoppers, signed up 8 at a time (auth queues at most 8 hashes per client address). */
export async function shoppers(mesh: Mesh, count: number): Promise<Shopper[]> {
  const all: Shopper[] = [];
  while (all.length < count) {
    const batch = Math.min(8, count - all.length);
    all.push(
      ...(await Promise.all(
        Array.from({ length: batch }, (_, i) => shopper(mesh, `Buyer ${all.length + i}`)),
      )),
    );
  }
  return all;
}

/** A shopper with the admin role (given by a mesh service, as `npm run admin` does). */
export async function admin(mesh: Mesh): Promise<Shopper> {
  const a = await shopper(mesh, "Admin");
  const users = createServiceClient(UserService, mesh.addr("user"), {
    mesh: createMeshCredentials(mesh.env.user.MESH_SECRET ?? "", "test"),
  });
  try {
    await users.setRoles({ userId: a.userId, roles: ["user", ADMIN_ROLE] });
  } finally {
    users.close();
  }
  await a.signInAgain();
  return a;
}

/** Rows of orders' own database. */
export const ordersDb = <R extends Record<string, unknown>>(
  mesh: Mesh,
  sql: string,
  params: unknown[] = [],
) => query<R>(mesh.env.orders.DATABASE_URL ?? "", sql, params);

/** The events of one type in the ORDERS stream, decoded. */
export async function ordersEvents<D extends DescMessage>(mesh: Mesh, schema: D): Promise<MessageShape<D>[]> {
  const nc = await connect({ servers: mesh.nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    const { state } = await jsm.streams.info("ORDERS");
    const found: MessageShape<D>[] = [];
    for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage("ORDERS", { seq }).catch(() => undefined);
      if (m?.header.get("Protomesh-Event-Type") === schema.typeName) found.push(fromBinary(schema, m.data));
    }
    return found;
  } finally {
    await nc.close();
  }
}

/** The status code a call ended with ("OK" when it succeeded). */
export const outcome = (call: Promise<unknown>) =>
  call.then(
    () => "OK",
    (err: unknown) => (err instanceof ConnectError ? Code[err.code] : String(err)),
  );

/** How often each outcome occurred. */
export const tally = (outcomes: string[]) =>
  outcomes.reduce<Record<string, number>>((t, o) => {
    t[o] = (t[o] ?? 0) + 1;
    return t;
  }, {});

/** An order as JSON, to compare whole answers. */
export const json = (order: Order | undefined) => (order ? toJson(OrderSchema, order) : undefined);

/** A fresh idempotency key. */
export const newKey = () => crypto.randomUUID();
