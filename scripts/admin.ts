// `npm run admin -- grant-admin EMAIL | revoke-admin EMAIL | list-admins`: how an operator makes
// the first admin (and any later one). It calls UserService over gRPC as a mesh service would,
// so it needs what a service has:
//   USER_ADDR    user's gRPC target. Default: where `npm start` runs user (PORT_BASE included).
//   MESH_SECRET  the mesh's secret. Default: the one `npm start` keeps in
//                $PROTOMESH_DATA_DIR/secrets.json (.data/secrets.json in the checkout).
// In a cluster, run it inside a user pod, which has both in its environment:
//   kubectl exec deploy/user -- node --import tsx scripts/admin.ts grant-admin ada@example.com
// A role change reaches the user's tokens at their next sign-in or token refresh.
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { meshServices } from "@protomesh/mesh";
import {
  ADMIN_ROLE,
  Code,
  ConnectError,
  createMeshCredentials,
  createServiceClient,
} from "@protomesh/platform";

const USAGE = "usage: npm run admin -- grant-admin EMAIL | revoke-admin EMAIL | list-admins";
const root = join(import.meta.dirname, "..");

/** Fails with a message for the operator (exit 1), not a stack trace. */
class Refused extends Error {}

/** user's address: USER_ADDR, else where `npm start` puts it (see its PORT_BASE rule). */
function userAddress(): string {
  if (process.env.USER_ADDR) return process.env.USER_ADDR;
  const index = meshServices.findIndex((s) => s.name === "user");
  const base = process.env.PORT_BASE;
  return `127.0.0.1:${base ? Number(base) + 1 + index : meshServices[index]?.port}`;
}

/** MESH_SECRET, else the development secret `npm start` made for this checkout. */
function meshSecret(): string {
  if (process.env.MESH_SECRET) return process.env.MESH_SECRET;
  const file = join(resolve(process.env.PROTOMESH_DATA_DIR ?? join(root, ".data")), "secrets.json");
  const secret = existsSync(file)
    ? (JSON.parse(readFileSync(file, "utf8")) as Record<string, string>).MESH_SECRET
    : undefined;
  if (!secret) {
    throw new Refused(
      `MESH_SECRET is not set and ${file} holds none (has npm start run here?). Set MESH_SECRET, or in a cluster run this inside a user pod.`,
    );
  }
  return secret;
}

const [command, email, ...extra] = process.argv.slice(2);
const needsEmail = command === "grant-admin" || command === "revoke-admin";
if (!(needsEmail || command === "list-admins") || (needsEmail ? !email : email) || extra.length > 0) {
  console.error(USAGE);
  process.exit(2);
}

let exitCode = 0;
const address = userAddress();
let users: ReturnType<typeof createServiceClient<typeof UserService>> | undefined;
try {
  users = createServiceClient(UserService, address, {
    mesh: createMeshCredentials(meshSecret(), "admin-cli"),
  });
  const client = users;

  /** The one account with this email (ListUsers compares emails case-insensitively). */
  const find = async (address: string) => {
    const [user] = (await client.listUsers({ email: address, pageSize: 1 })).users;
    if (!user) throw new Refused(`no account with the email ${address}`);
    return user;
  };
  const takesEffect = "It takes effect at their next sign-in or token refresh (within 15 minutes).";

  if (command === "list-admins") {
    let pageToken = "";
    let count = 0;
    do {
      const page = await client.listUsers({ role: ADMIN_ROLE, pageSize: 100, pageToken });
      for (const u of page.users) console.log(`${u.email}\t${u.id}\t${u.displayName}`);
      count += page.users.length;
      pageToken = page.nextPageToken;
    } while (pageToken);
    console.log(`${count} admin(s)`);
  } else if (command === "grant-admin") {
    const user = await find(email ?? "");
    if (user.roles.includes(ADMIN_ROLE)) {
      console.log(`${user.email} is already an admin.`);
    } else {
      const { user: updated } = await client.setRoles({
        userId: user.id,
        roles: [...user.roles, ADMIN_ROLE],
      });
      console.log(`${user.email} is now an admin (roles: ${updated?.roles.join(", ")}). ${takesEffect}`);
    }
  } else {
    const user = await find(email ?? "");
    if (!user.roles.includes(ADMIN_ROLE)) {
      console.log(`${user.email} is not an admin.`);
    } else {
      const roles = user.roles.filter((r) => r !== ADMIN_ROLE);
      await client.setRoles({ userId: user.id, roles });
      console.log(
        `${user.email} is no longer an admin (roles: ${roles.join(", ") || "none"}). ${takesEffect}`,
      );
    }
  }
} catch (err) {
  exitCode = 1;
  if (err instanceof Refused) console.error(err.message);
  else if (err instanceof ConnectError && err.code === Code.Unavailable) {
    console.error(`cannot reach user at ${address} (is the mesh running? USER_ADDR picks the address)`);
  } else if (err instanceof ConnectError && err.code === Code.Unauthenticated) {
    console.error(`user at ${address} refused our credentials: MESH_SECRET is not this mesh's secret`);
  } else if (err instanceof ConnectError) console.error(err.rawMessage);
  else throw err;
} finally {
  users?.close();
}
process.exit(exitCode);
