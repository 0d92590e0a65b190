// Roles live only in user: GetRoles (INTERNAL) for auth when it issues tokens, SetRoles (ADMIN)
// replacing them in one step with a UserUpdated event.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import { createServiceClient } from "@protomesh/platform";
import { failure, type Mesh, startMesh, waitUntil } from "@protomesh/testkit";
import { createProfile, makeAdmin, meshUsers, signedIn, updatesOf } from "./helpers.ts";

let mesh: Mesh;
let users: ReturnType<typeof meshUsers>;
before(async () => {
  mesh = await startMesh({ services: ["auth", "user"] });
  users = meshUsers(mesh);
});
after(async () => {
  users?.close();
  await mesh?.stop();
});

test("GetRoles gives mesh services a user's roles, and NOT_FOUND for an unknown user", async () => {
  const user = await createProfile(mesh, "Gia");
  assert.deepEqual((await users.getRoles({ userId: user.id })).roles, ["user"], "a new user is a plain user");

  const unknown = await failure(users.getRoles({ userId: crypto.randomUUID() }));
  assert.equal(unknown.code, Code.NotFound);
  const bad = await failure(users.getRoles({ userId: "not-a-uuid" }));
  assert.equal(bad.code, Code.InvalidArgument);
  assert.match(bad.rawMessage, /^user_id: /);
});

test("GetRoles is internal: refused to a user calling the service, not routed by the gateway", async () => {
  const me = await signedIn(mesh, "Ina");
  const direct = createServiceClient(UserService, mesh.addr("user"));
  try {
    const err = await failure(direct.getRoles({ userId: me.userId }, { accessToken: me.token }));
    assert.equal(err.code, Code.PermissionDenied);
  } finally {
    direct.close();
  }
  const res = await fetch(`${mesh.url}/protomesh.user.v1.UserService/GetRoles`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${me.token}` },
    body: JSON.stringify({ userId: me.userId }),
  });
  assert.notEqual(res.status, 200);
  assert.doesNotMatch(await res.text(), /roles/);
});

test("SetRoles replaces the roles, GetRoles shows them, and UserUpdated names roles", async () => {
  const user = await createProfile(mesh, "Rae");
  const set = await users.setRoles({ userId: user.id, roles: ["user", "admin", "support"] });
  assert.deepEqual(set.user?.roles, ["user", "admin", "support"]);
  assert.equal(set.user?.email, user.email, "the full profile comes back");
  assert.deepEqual((await users.getRoles({ userId: user.id })).roles, ["user", "admin", "support"]);

  await users.setRoles({ userId: user.id, roles: ["support"] });
  assert.deepEqual((await users.getRoles({ userId: user.id })).roles, ["support"], "replaced, not merged");

  const events = await waitUntil(
    async () => {
      const e = await updatesOf(mesh, user.id);
      return e.length >= 2 ? e : undefined;
    },
    10_000,
    "two UserUpdated events",
  );
  assert.deepEqual(
    events.map((e) => [e.changedFields, e.user?.roles]),
    [
      [["roles"], ["user", "admin", "support"]],
      [["roles"], ["support"]],
    ],
  );
});

test("SetRoles refuses bad role names and unknown users, changing nothing", async () => {
  const user = await createProfile(mesh, "Val");
  for (const roles of [
    ["Admin"],
    ["user", "user"],
    [""],
    ["a b"],
    Array.from({ length: 17 }, (_, i) => `r${i}`),
  ]) {
    const err = await failure(users.setRoles({ userId: user.id, roles }));
    assert.equal(err.code, Code.InvalidArgument, JSON.stringify(roles));
    assert.match(err.rawMessage, /^roles/, JSON.stringify(roles));
  }
  assert.deepEqual((await users.getRoles({ userId: user.id })).roles, ["user"]);

  const unknown = await failure(users.setRoles({ userId: crypto.randomUUID(), roles: ["admin"] }));
  assert.equal(unknown.code, Code.NotFound);
});

test("a user without the admin role gets PERMISSION_DENIED from SetRoles and ListUsers", async () => {
  const me = await signedIn(mesh, "Pat");
  const promote = await failure(me.users.setRoles({ userId: me.userId, roles: ["user", "admin"] }));
  assert.equal(promote.code, Code.PermissionDenied);
  const list = await failure(me.users.listUsers({}));
  assert.equal(list.code, Code.PermissionDenied);
  assert.deepEqual((await users.getRoles({ userId: me.userId })).roles, ["user"]);
});

test("an admin cannot take the admin role from themselves (FAILED_PRECONDITION)", async () => {
  // A service acting for a signed-in admin: the rule holds whoever relays the call.
  const me = await signedIn(mesh, "Sol");
  await users.setRoles({ userId: me.userId, roles: ["user", "admin"] });
  const err = await failure(
    users.setRoles({ userId: me.userId, roles: ["user"] }, { accessToken: me.token }),
  );
  assert.equal(err.code, Code.FailedPrecondition);
  assert.match(err.rawMessage, /admin role from yourself/);
  assert.deepEqual((await users.getRoles({ userId: me.userId })).roles, ["user", "admin"]);
});

test("an admin signed in through the gateway manages roles; the change shows at the next sign-in", async () => {
  const admin = await signedIn(mesh, "Ada");
  await makeAdmin(mesh, admin);
  const other = await signedIn(mesh, "Bo");

  await admin.users.setRoles({ userId: other.userId, roles: ["user", "admin"] });
  // Bo's current token predates the change; the next one carries it.
  assert.equal((await failure(other.users.listUsers({}))).code, Code.PermissionDenied);
  await other.signInAgain();
  const { users: listed } = await other.users.listUsers({ email: admin.email });
  assert.equal(listed[0]?.id, admin.userId);

  const self = await failure(admin.users.setRoles({ userId: admin.userId, roles: ["user"] }));
  assert.equal(self.code, Code.FailedPrecondition);
  // Another admin may demote them.
  await other.users.setRoles({ userId: admin.userId, roles: ["user"] });
  assert.deepEqual((await users.getRoles({ userId: admin.userId })).roles, ["user"]);
});
