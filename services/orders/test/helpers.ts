// What orders' tests share: a shop mesh, shoppers and admins signed in through the gateway,
// products in catalog, and looks into orders' database and the ORDERS stream.
import { type DescMessage, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { type Order, OrderSchema, OrdersService } from "@protomesh/contracts/orders/v1/orders_pb";
import { OtpIssuedSchema } from "@protomesh/contracts/otp/v1/events_pb";
import { Purpose } from "@protomesh/contracts/otp/v1/otp_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { ADMIN_ROLE, createMeshCredentials, createServiceClient } from "@protomesh/platform";
import {
  gatewayClient,
  type Mesh,
  type MeshOptions,
  query,
  rememberSecrets,
  signUpAndSignIn,
  startMesh,
  waitUntil,
} from "@protomesh/testkit";
import { streamEvents } from "../../auth/test/auth-events.ts";
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

/** auth, user, otp, catalog and orders behind the gateway; settings of a test's own on top. */
export function startShop(env: MeshOptions["env"] = {}): Promise<Mesh> {
  return startMesh({
    services: ["auth", "user", "otp", "catalog", "orders"],
    env: { ...env, catalog: { CATALOG_SEED_DEMO: "false", ...env.catalog } },
  });
}

/** A signed-in user with an OrdersService client of the gateway carrying their token. */
async function signedIn(mesh: Mesh, name: string) {
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
    /** Confirms the email with the code otp issued at sign-up; the next token says so. */
    async verify(code: string) {
      const as = gatewayClient(AuthService, mesh.url, "connect-json", () => session.token);
      await as.verifyEmail({ code });
      const { tokens } = await auth.refreshToken({ refreshToken: account.tokens.refreshToken });
      session.token = tokens?.accessToken ?? "";
    },
  };
  return session;
}

export type Shopper = Awaited<ReturnType<typeof signedIn>>;

/** A signed-in user whose email is not verified yet (they may not place orders). */
export const unverifiedShopper = (mesh: Mesh, name = "Unverified") => signedIn(mesh, name);

/**
 * `count` signed-in users with verified emails (placing orders needs one), signed up 8 at a
 * time (auth queues at most 8 hashes per client address).
 */
export async function shoppers(mesh: Mesh, count: number): Promise<Shopper[]> {
  const all: Shopper[] = [];
  while (all.length < count) {
    const batch = Math.min(8, count - all.length);
    all.push(
      ...(await Promise.all(
        Array.from({ length: batch }, (_, i) => signedIn(mesh, `Buyer ${all.length + i}`)),
      )),
    );
  }
  const codes = await waitUntil(
    async () => {
      const issued = await streamEvents(mesh.nats.url, "OTP", OtpIssuedSchema);
      const byEmail = new Map(
        issued.filter((e) => e.purpose === Purpose.VERIFY_EMAIL).map((e) => [e.destination, e.code]),
      );
      return all.every((s) => byEmail.has(s.email)) ? byEmail : undefined;
    },
    15_000,
    "every verification code issued",
  );
  for (const code of codes.values()) rememberSecrets(code);
  await Promise.all(all.map((s) => s.verify(codes.get(s.email) ?? "")));
  return all;
}

/** One signed-in user with a verified email. */
export async function shopper(mesh: Mesh): Promise<Shopper> {
  const [one] = await shoppers(mesh, 1);
  if (!one) throw new Error("no shopper");
  return one;
}

/** Gives a shopper the admin role (as `npm run admin` does, with mesh credentials) and a token with it. */
export async function makeAdmin(mesh: Mesh, a: Shopper): Promise<Shopper> {
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

/** The events of one type in the ORDERS stream. */
export const ordersEvents = <D extends DescMessage>(mesh: Mesh, schema: D) =>
  streamEvents(mesh.nats.url, "ORDERS", schema);

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
