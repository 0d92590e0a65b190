// UserDeleted (from auth) removes everything user keeps about the account, once per event and
// harmlessly again for a repeat.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { UserDeletedSchema } from "@protomesh/contracts/auth/v1/events_pb";
import { failure, type Mesh, publishEvent, query, startMesh, waitUntil } from "@protomesh/testkit";
import { meshUsers, signedIn } from "./helpers.ts";

let mesh: Mesh;
let users: ReturnType<typeof meshUsers>;
before(async () => {
  // auth declares the AUTH stream that carries UserDeleted.
  mesh = await startMesh({ services: ["auth", "user"] });
  users = meshUsers(mesh);
});
after(async () => {
  users?.close();
  await mesh?.stop();
});

const deleted = (userId: string, email: string) =>
  publishEvent(mesh.nats.url, UserDeletedSchema, { userId, email, occurTime: timestampNow() });

/** Whether user's consumer has recorded an event as processed. */
const processed = async (eventId: string) =>
  (
    await query(
      mesh.env.user.DATABASE_URL ?? "",
      "SELECT 1 FROM processed_events WHERE consumer = 'user-account-deletions' AND event_id = $1",
      [eventId],
    )
  ).length > 0;

test("a deleted account's profile and roles are gone; other users keep theirs", async () => {
  const gone = await signedIn(mesh, "Gone");
  const stays = await signedIn(mesh, "Stays");
  await users.setRoles({ userId: gone.userId, roles: ["user", "admin"] });

  const eventId = await deleted(gone.userId, gone.email);
  await waitUntil(() => processed(eventId), 10_000, "the deletion handled");

  assert.equal((await failure(users.getRoles({ userId: gone.userId }))).code, Code.NotFound);
  assert.equal((await failure(stays.users.getUser({ userId: gone.userId }))).code, Code.NotFound);
  // The access token outlives the account by up to 15 minutes; it finds nothing.
  assert.equal((await failure(gone.users.getMe({}))).code, Code.NotFound);
  assert.equal(
    (await failure(gone.users.updateMe({ profile: { bio: "back?" }, updateMask: { paths: ["bio"] } }))).code,
    Code.NotFound,
  );
  const search = await stays.users.searchUsers({ query: "Gone" });
  assert.ok(!search.profiles.some((p) => p.id === gone.userId), "not found by search");
  const rows = await query(mesh.env.user.DATABASE_URL ?? "", "SELECT 1 FROM users WHERE id = $1", [
    gone.userId,
  ]);
  assert.equal(rows.length, 0, "no row left behind");

  assert.equal((await stays.users.getMe({})).user?.displayName, "Stays");
  assert.deepEqual((await users.getRoles({ userId: stays.userId })).roles, ["user"]);
});

test("a repeated UserDeleted, or one for an unknown user, is handled without error", async () => {
  const gone = await signedIn(mesh, "Twice");
  const first = await deleted(gone.userId, gone.email);
  const again = await deleted(gone.userId, gone.email);
  const unknown = await deleted(crypto.randomUUID(), "nobody@example.com");
  await waitUntil(
    async () => (await processed(first)) && (await processed(again)) && (await processed(unknown)),
    10_000,
    "all three handled",
  );
  assert.equal((await failure(users.getRoles({ userId: gone.userId }))).code, Code.NotFound);
});
