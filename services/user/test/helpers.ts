// What user's tests share: signed-in accounts, mesh-side clients and the USER stream's events.
import { fromBinary } from "@bufbuild/protobuf";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { UserUpdatedSchema } from "@protomesh/contracts/user/v1/events_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { ADMIN_ROLE, createMeshCredentials, createServiceClient } from "@protomesh/platform";
import { gatewayClient, type Mesh, signUpAndSignIn, uniqueEmail } from "@protomesh/testkit";
import { connect } from "nats";

/** A signed-up, signed-in user with a UserService client of the gateway carrying their token. */
export async function signedIn(mesh: Mesh, displayName: string) {
  const auth = gatewayClient(AuthService, mesh.url, "connect-json");
  const account = await signUpAndSignIn(auth, { email: uniqueEmail("user"), displayName });
  const session = {
    ...account,
    /** The current access token (replaced by signInAgain). */
    token: account.accessToken,
    auth,
    users: gatewayClient(UserService, mesh.url, "connect-json", (): string => session.token),
    /** Signs in again, so the token carries the roles the user has now. */
    async signInAgain(): Promise<string> {
      const { result } = await auth.signIn({ email: account.email, password: account.password });
      if (result.case !== "tokens") throw new Error(`sign-in did not return tokens (${result.case})`);
      session.token = result.value.accessToken;
      return session.token;
    },
  };
  return session;
}

/** UserService as another service of the mesh calls it (INTERNAL and ADMIN methods allowed). */
export function meshUsers(mesh: Mesh) {
  return createServiceClient(UserService, mesh.addr("user"), {
    mesh: createMeshCredentials(mesh.env.user.MESH_SECRET ?? "", "test"),
  });
}

/** Gives a signed-in user the admin role and signs them in again so their token carries it. */
export async function makeAdmin(mesh: Mesh, account: Awaited<ReturnType<typeof signedIn>>) {
  const users = meshUsers(mesh);
  try {
    await users.setRoles({ userId: account.userId, roles: ["user", ADMIN_ROLE] });
  } finally {
    users.close();
  }
  await account.signInAgain();
}

/** A profile made the way auth's sign-up makes one (no account to sign in with). */
export async function createProfile(mesh: Mesh, displayName: string, email = uniqueEmail("profile")) {
  const users = meshUsers(mesh);
  try {
    const { user } = await users.createUser({ userId: crypto.randomUUID(), email, displayName });
    if (!user) throw new Error("CreateUser returned no user");
    return user;
  } finally {
    users.close();
  }
}

/** A tag of lower-case letters, unique enough to keep one test's names apart from another's. */
export const uniqueTag = () =>
  Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => String.fromCharCode(97 + (b % 26))).join("");

/** The UserUpdated events of one user in the USER stream. */
export async function updatesOf(mesh: Mesh, userId: string) {
  const nc = await connect({ servers: mesh.nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.info("USER");
    const events = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage("USER", { seq });
      const event = fromBinary(UserUpdatedSchema, m.data);
      if (event.user?.id === userId) events.push(event);
    }
    return events;
  } finally {
    await nc.close();
  }
}
